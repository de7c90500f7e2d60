//! TLS for the HTTP servers (feature `tls`), with optional client certificates (mTLS): the
//! server's certificate chain and key from PEM files, and, with `client_ca_file`, client
//! certificates verified against that CA (webpki, rustls's own verifier). A verified client
//! certificate reaches the handlers as a [`ClientCert`] request extension, so a service can
//! take its subject as the caller. The handshake has the connection's header-read deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
pub use tokio_rustls::TlsAcceptor;

/// `[tls]` of a server's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; unset: no client
    /// certificates are asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// `optional` (default): a client may connect without a certificate and authenticate
    /// otherwise (a bearer token); `required`: the handshake fails without one.
    #[serde(default)]
    pub client_cert: ClientCertMode,
}

/// Whether a client certificate is needed to connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    #[default]
    Optional,
    Required,
}

/// The verified client certificate of the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's distinguished name, RFC 4514 style (`CN=identity-provider, O=...`).
    pub subject: Arc<str>,
    /// The subject's first common name, if any.
    pub common_name: Option<Arc<str>>,
}

impl ClientCert {
    /// The subject of a DER certificate; `None` if it does not parse (rustls verified it, so
    /// that does not happen for a certificate it let through).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(Arc::from);
        Some(Self {
            subject: Arc::from(subject.to_string().as_str()),
            common_name,
        })
    }
}

/// A TLS config that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("tls.{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        message: message.to_string(),
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| err(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// The acceptor for `cfg`, or the key that is wrong.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("cert_file", &cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| err("key_file", format!("{}: {e}", cfg.key_file.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("cert_file", e))?;
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certs("client_ca_file", path)? {
                roots.add(ca).map_err(|e| err("client_ca_file", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match cfg.client_cert {
                ClientCertMode::Required => verifier,
                ClientCertMode::Optional => verifier.allow_unauthenticated(),
            };
            builder
                .with_client_cert_verifier(verifier.build().map_err(|e| err("client_ca_file", e))?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("key_file", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_subject_is_read_with_its_common_name() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "identity-provider");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "switchyard");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let got = ClientCert::from_der(cert.der()).unwrap();
        assert_eq!(got.common_name.as_deref(), Some("identity-provider"));
        assert!(
            got.subject.contains("CN=identity-provider"),
            "{}",
            got.subject
        );
        assert!(got.subject.contains("O=switchyard"), "{}", got.subject);
        assert_eq!(ClientCert::from_der(b"not a certificate"), None);
    }

    #[test]
    fn a_bad_file_names_its_key() {
        let dir = std::env::temp_dir().join(format!("tls-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let cfg = TlsConfig {
            cert_file: empty.clone(),
            key_file: empty,
            client_ca_file: None,
            client_cert: ClientCertMode::Optional,
        };
        let e = acceptor(&cfg).err().expect("an empty cert file is refused");
        assert_eq!(e.key, "cert_file");
        let cfg = TlsConfig {
            cert_file: dir.join("missing.pem"),
            ..cfg
        };
        assert_eq!(acceptor(&cfg).err().unwrap().key, "cert_file");
    }
}
