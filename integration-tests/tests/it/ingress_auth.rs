//! Ingress access control against the real broker: callers' credentials (401), their routes
//! (403), identity headers only from the gateway, routes opened explicitly, the refusal
//! counters; the read-only schema registry; and the uid-notify kill switch's `hold` mode with
//! the dispatcher holding delivery.

use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, read};
use integration_tests::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_cli::client::AdminClient;

use crate::support::ingress_calls::post_bind;

const IDP: &str = "idp-token-0123456789abcdef";
const GATEWAY: &str = "gateway-token-0123456789abcdef";
const PARTNER: &str = "partner-token-0123456789abcdef";
const TASKS: &str = "tasks-token-0123456789abcdef";
const SEEN: &str = "/4.0/mark-notify/v1/seen";
const BIND: &str = r#"{"portal_uid":1,"phonish_uid":2,"event_type":"bind"}"#;

/// An ingress with the identity provider, the gateway (trusted), a partner app (mark-notify,
/// not trusted) and the tasks domain (`events:tasks.*` and `schemas`), on `uid_topic`.
fn config(uid_topic: &str, marks: &str) -> switchyard_ingress::IngressConfig {
    let mut cfg = ingress_config(uid_topic);
    cfg.mark_notify.topic = marks.to_owned();
    cfg.domain_events.registry_file = Some(workspace_root().join("deploy/events.toml"));
    cfg.auth.callers = vec![
        ingress_caller("identity-provider", IDP, &["uid-notify"], false),
        ingress_caller("api-gateway", GATEWAY, &["mark-notify"], true),
        ingress_caller("partner-app", PARTNER, &["mark-notify"], false),
        ingress_caller("tasks", TASKS, &["events:tasks.*", "schemas"], false),
    ];
    cfg
}

async fn call(
    req: reqwest::RequestBuilder,
    auth: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let req = match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    };
    let resp = req
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn metrics(ingress: &Running) -> String {
    reqwest::get(ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn callers_need_a_known_credential_and_may_use_only_their_routes() {
    let topic = unique("auth-uid");
    create_topic(&topic, 1).await.unwrap();
    let ingress = start_ingress(config(&topic, "unused"), None).await.unwrap();
    let http = reqwest::Client::new();
    let uid = ingress.url("/v1/uid-notify");

    // Missing, unknown and malformed credentials: 401, WWW-Authenticate, the JSON error body.
    for auth in [
        None,
        Some(bearer("not-a-known-token-at-all")),
        Some(format!("Basic {IDP}")),
    ] {
        let (st, body, headers) = call(http.post(&uid).body(BIND), auth.as_deref()).await;
        assert_eq!(st, 401, "{auth:?}: {body}");
        assert_eq!(body["code"], "unauthenticated", "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    }
    // A known caller outside its routes: 403.
    let (st, body, _) = call(http.post(&uid).body(BIND), Some(&bearer(GATEWAY))).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("api-gateway"));

    // The right caller, by bearer token and by API key: stored on the broker.
    let (st, first, _) = call(http.post(&uid).body(BIND), Some(&bearer(IDP))).await;
    assert_eq!(st, 200, "{first}");
    let resp = http
        .post(&uid)
        .header("x-api-key", IDP)
        .header("content-type", "application/json")
        .body(BIND)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let records = read(&topic, 3, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        records.len(),
        2,
        "only the two accepted requests were published"
    );

    // Domain events: per event type.
    let task = json!({
        "task_id": "0190e6a4-0000-7000-8000-000000000001",
        "user_id": "0190e6a4-0000-7000-8000-000000000002",
        "assigned_at": "2026-01-01T10:00:00Z"
    })
    .to_string();
    let (st, body, _) = call(
        http.post(ingress.url("/v1/events/tasks.task_assigned.v1"))
            .body(task),
        Some(&bearer(TASKS)),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body, _) = call(
        http.post(ingress.url("/v1/events/users.user_activated.v1"))
            .body(r#"{"user_id":"0190e6a4-0000-7000-8000-000000000002"}"#),
        Some(&bearer(TASKS)),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "forbidden");

    // Probes and scrapes stay open.
    for path in ["/ping", "/metrics"] {
        let st = http.get(ingress.url(path)).send().await.unwrap().status();
        assert_eq!(st, 200, "{path}");
    }

    // Counted by caller, route template and outcome; unknown callers as `unknown`.
    let text = metrics(&ingress).await;
    for line in [
        r#"switchyard_ingress_auth_total{caller="unknown",route="/v1/uid-notify",outcome="unauthenticated"} 3"#,
        r#"switchyard_ingress_auth_total{caller="api-gateway",route="/v1/uid-notify",outcome="forbidden"} 1"#,
        r#"switchyard_ingress_auth_total{caller="identity-provider",route="/v1/uid-notify",outcome="allowed"} 2"#,
        r#"switchyard_ingress_auth_total{caller="tasks",route="/v1/events/{event_type}",outcome="allowed"} 1"#,
        r#"switchyard_ingress_auth_total{caller="tasks",route="/v1/events/{event_type}",outcome="forbidden"} 1"#,
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn identity_headers_are_trusted_only_from_the_gateway() {
    let marks = unique("auth-marks");
    create_topic(&marks, 1).await.unwrap();
    let ingress = start_ingress(config("unused", &marks), None).await.unwrap();
    let http = reqwest::Client::new();
    let mark = |auth: &str, user: Option<&str>, id: &str| {
        let mut req = http
            .post(ingress.url(SEEN))
            .header("authorization", bearer(auth))
            .body(format!(r#"{{"tag":"promo","id":"{id}"}}"#));
        if let Some(u) = user {
            req = req.header("X-YaTaxi-UserId", u);
        }
        call(req, None)
    };
    // The partner app may mark, but not claim to be a client.
    let (st, body, _) = mark(PARTNER, Some("user-1"), "forged").await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("x-yataxi-userid"),
        "{body}"
    );
    let (st, anon, _) = mark(PARTNER, None, "anon").await;
    assert_eq!(st, 200, "{anon}");
    let (st, client, _) = mark(GATEWAY, Some("user-1"), "real").await;
    assert_eq!(st, 200, "{client}");

    let records = read(&marks, 3, Duration::from_secs(10)).await.unwrap();
    assert_eq!(records.len(), 2, "the forged mark was not published");
    let mut seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let env = events::Envelope::from_bytes(rdkafka::Message::payload(r).unwrap()).unwrap();
            let Some(events::v1::envelope::Payload::NotificationSeen(m)) = env.payload else {
                panic!("not a mark");
            };
            let who = match m.caller {
                Some(events::v1::notification_seen::Caller::Client(c)) => c.user_id,
                Some(events::v1::notification_seen::Caller::Anonymous(_)) => "anonymous".into(),
                other => panic!("{other:?}"),
            };
            (m.id, who)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("anon".to_owned(), "anonymous".to_owned()),
            ("real".to_owned(), "user-1".to_owned())
        ]
    );
    let text = metrics(&ingress).await;
    let line = r#"switchyard_ingress_auth_total{caller="partner-app",route="/4.0/mark-notify/v1/seen",outcome="identity_headers_refused"} 1"#;
    assert!(text.contains(line), "no {line} in\n{text}");
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn allow_unauthenticated_opens_only_the_named_route() {
    let marks = unique("open-marks");
    create_topic(&marks, 1).await.unwrap();
    let mut cfg = config("unused", &marks);
    cfg.auth.allow_unauthenticated = vec!["mark-notify".into()];
    let ingress = start_ingress(cfg, None).await.unwrap();
    let http = reqwest::Client::new();
    let body = r#"{"tag":"promo","id":"open"}"#;

    let (st, resp, _) = call(http.post(ingress.url(SEEN)).body(body), None).await;
    assert_eq!(st, 200, "{resp}");
    // Open is not trusted: identity headers still need the gateway's credential.
    let (st, resp, _) = call(
        http.post(ingress.url(SEEN))
            .header("X-YaTaxi-UserId", "user-1")
            .body(body),
        None,
    )
    .await;
    assert_eq!(st, 403, "{resp}");
    // A wrong credential is refused even on an open route; other routes stay closed.
    let (st, _, _) = call(
        http.post(ingress.url(SEEN)).body(body),
        Some(&bearer("wrong-token-wrong-token")),
    )
    .await;
    assert_eq!(st, 401);
    let (st, _, _) = call(http.post(ingress.url("/v1/uid-notify")).body(BIND), None).await;
    assert_eq!(st, 401);

    assert_eq!(
        read(&marks, 2, Duration::from_secs(8)).await.unwrap().len(),
        1
    );
    let text = metrics(&ingress).await;
    let line = r#"switchyard_ingress_auth_total{caller="unknown",route="/4.0/mark-notify/v1/seen",outcome="open"} 2"#;
    assert!(text.contains(line), "no {line} in\n{text}");
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_file_is_read_at_start() {
    let dir = std::env::temp_dir().join(unique("tokens"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("idp.token");
    std::fs::write(&file, "file-token-0123456789abcdef\n").unwrap();
    let topic = unique("auth-file");
    create_topic(&topic, 1).await.unwrap();
    let mut cfg = config(&topic, "unused");
    let mut from_file = ingress_caller("idp-file", "unused", &["uid-notify"], false);
    from_file.token_sha256 = None;
    from_file.token_file = Some(file);
    cfg.auth.callers = vec![from_file];
    let ingress = start_ingress(cfg, None).await.unwrap();
    let http = reqwest::Client::new();
    let url = ingress.url("/v1/uid-notify");
    let (st, body, _) = call(
        http.post(&url).body(BIND),
        Some(&bearer("file-token-0123456789abcdef")),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, _, _) = call(http.post(&url).body(BIND), Some(&bearer("unused"))).await;
    assert_eq!(st, 401);
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn schemas_are_served_read_only_with_an_etag() {
    let ingress = start_ingress(config("unused", "unused"), None)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let get = |path: &str, etag: Option<&str>| {
        let mut req = http
            .get(ingress.url(path))
            .header("authorization", bearer(TASKS));
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        req.send()
    };

    let resp = get("/v1/schemas", None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let list: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = list["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"tasks.task_assigned.v1"), "{list}");
    assert!(ids.contains(&"users.user_created.v2"), "{list}");
    let resp = get("/v1/schemas", Some(&etag)).await.unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], etag.as_str());

    let resp = get("/v1/schemas/tasks.task_assigned.v1", None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/schema+json");
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let served: Value = resp.json().await.unwrap();
    let file = workspace_root().join("schemas/events/tasks.task_assigned.v1.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(served, committed);
    let resp = get("/v1/schemas/tasks.task_assigned.v1", Some(&etag))
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    let other = get("/v1/schemas/users.user_created.v2", None)
        .await
        .unwrap();
    assert_ne!(other.headers()["etag"], etag.as_str());

    for (path, status, code) in [
        ("/v1/schemas/nope.nope.v1", 404, "unknown_event_type"),
        (
            "/v1/schemas/tasks.task_assigned.v9",
            404,
            "unknown_event_version",
        ),
        ("/v1/schemas/tasks", 400, "invalid_field"),
    ] {
        let resp = get(path, None).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code, "{path}: {body}");
    }
    // Only for callers allowed `schemas`.
    let (st, _, _) = call(http.get(ingress.url("/v1/schemas")), None).await;
    assert_eq!(st, 401);
    let (st, _, _) = call(http.get(ingress.url("/v1/schemas")), Some(&bearer(IDP))).await;
    assert_eq!(st, 403);
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn hold_publishes_while_the_paused_subscriber_delivers_nothing_until_resumed() {
    let topic = unique("uid-hold");
    create_topic(&topic, 2).await.unwrap();
    let mut icfg = ingress_config(&topic);
    icfg.uid_notify.mode = switchyard_ingress::config::UidNotifyMode::Hold;
    let ingress = start_ingress(icfg, None).await.unwrap();
    let sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let name = unique("held");
    let mut s = http_subscriber(&name, &topic, &sub.url("/hook"));
    s.paused = true;
    let mut dcfg = dispatcher_config(vec![s]);
    let token = "test-admin-token-0123456789";
    dcfg.admin.token = Some(token.into());
    let dispatcher = start_dispatcher(dcfg).await.unwrap();
    let admin = AdminClient::new(&format!("http://{}", dispatcher.addr), token);

    for p in 1..=3u64 {
        post_bind(&ingress, 9, p).await;
    }
    // Published and kept on the topic...
    assert_eq!(
        read(&topic, 3, Duration::from_secs(20))
            .await
            .unwrap()
            .len(),
        3
    );
    // ...but not delivered while the subscriber holds.
    assert!(!sub.wait_delivered(1, Duration::from_secs(4)).await);
    assert!(sub.received().is_empty());
    let view = admin
        .subscribers()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap();
    assert_eq!(view.state, "paused");

    // Back on: everything held is delivered.
    admin.set_paused(&name, false).await.unwrap();
    assert!(
        sub.wait_delivered(3, Duration::from_secs(30)).await,
        "got {}",
        sub.delivered().len()
    );
    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}
