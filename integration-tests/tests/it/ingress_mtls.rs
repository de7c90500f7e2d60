//! Ingress over TLS with client certificates (issue 16.1, optional mTLS): a caller named by its
//! certificate's common name, checked against a CA, with the same routes, 401 and 403 as a
//! token caller; a bearer token still works over TLS; a certificate from another CA never gets
//! a connection.

use std::path::Path;

use integration_tests::kafka::create_topic;
use integration_tests::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reqwest::StatusCode;
use serde_json::Value;
use switchyard_runtime::http::tls::{ClientCertMode, TlsConfig};

const BIND: &str = r#"{"portal_uid":1,"phonish_uid":2,"event_type":"bind"}"#;

/// A CA that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for `cn`: a server certificate for 127.0.0.1, or a client certificate.
    fn issue(&self, cn: &str, server: bool) -> (String, String) {
        let sans = if server {
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "switchyard tests");
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A client trusting `ca`, presenting `identity` (certificate and key PEM) if given.
fn client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn post(
    c: &reqwest::Client,
    url: String,
    body: &str,
    bearer: Option<&str>,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let mut req = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn a_client_certificate_names_the_caller_and_its_routes() {
    let dir = std::env::temp_dir().join(unique("mtls"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("switchyard test CA");
    let (server_cert, server_key) = ca.issue("ingress", true);
    let idp = ca.issue("identity-provider", false);
    let nobody = ca.issue("nobody-we-know", false);
    let stranger_ca = Ca::new("another CA");
    let forged = stranger_ca.issue("identity-provider", false);

    let topic = unique("mtls-uid");
    create_topic(&topic, 1).await.unwrap();
    let mut cfg = ingress_config(&topic);
    cfg.tls = Some(TlsConfig {
        cert_file: write(&dir, "server.pem", &server_cert),
        key_file: write(&dir, "server.key", &server_key),
        client_ca_file: Some(write(&dir, "ca.pem", &ca.cert.pem())),
        client_cert: ClientCertMode::Optional,
    });
    cfg.auth.callers.push(ingress_cert_caller(
        "identity-provider",
        "identity-provider",
        &["uid-notify"],
    ));
    let ingress = start_ingress(cfg, None).await.unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", ingress.addr.port());

    // The identity provider's certificate: its route, and no other.
    let c = client(&ca, Some(&idp));
    let (status, body) = post(&c, url("/v1/uid-notify"), BIND, None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&c, url("/v1/driver-status"), "{}", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("identity-provider"),
        "{body}"
    );

    // A certificate of the right CA whose name is no caller's: 401 naming the subject.
    let c = client(&ca, Some(&nobody));
    let (status, body) = post(&c, url("/v1/uid-notify"), BIND, None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("CN=nobody-we-know"),
        "{body}"
    );

    // No certificate (client certificates are optional here): a token still works, nothing is 401.
    let c = client(&ca, None);
    let (status, body) = post(&c, url("/v1/uid-notify"), BIND, None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "unauthenticated", "{body}");
    let (status, body) = post(&c, url("/v1/uid-notify"), BIND, Some(TEST_INGRESS_TOKEN))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    // The same common name from another CA: the handshake fails, no answer at all.
    let c = client(&ca, Some(&forged));
    let refused = post(&c, url("/v1/uid-notify"), BIND, None).await;
    assert!(refused.is_err(), "a forged certificate got {refused:?}");

    // Plain HTTP on the TLS port gets no answer either.
    let plain = post(
        &reqwest::Client::new(),
        ingress.url("/v1/uid-notify"),
        BIND,
        Some(TEST_INGRESS_TOKEN),
    )
    .await;
    assert!(
        plain.as_ref().map_or(true, |(s, _)| !s.is_success()),
        "{plain:?}"
    );

    // Every accepted uid-notify reached the topic: two records.
    let records = integration_tests::kafka::read(&topic, 2, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_caller_named_by_certificate_needs_a_client_ca() {
    let topic = unique("mtls-cfg");
    let mut cfg = ingress_config(&topic);
    cfg.auth.callers.push(ingress_cert_caller(
        "identity-provider",
        "identity-provider",
        &["uid-notify"],
    ));
    let err = start_ingress(cfg, None).await.err().expect("refused");
    assert!(err.to_string().contains("tls.client_ca_file"), "{err}");
}
