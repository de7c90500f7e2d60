//! Ingress behaviour that needs no subscriber: validation, kill switch, broker down.

use std::time::Duration;

use integration_tests::kafka::{create_topic, read};
use integration_tests::*;
use serde_json::Value;

async fn post_raw(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = ingress_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn every_bad_request_is_a_400_naming_the_field() {
    let topic = unique("uid-bad");
    create_topic(&topic, 1).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let url = ingress.url("/v1/uid-notify");
    let big = format!(
        r#"{{"portal_uid":1,"phonish_uid":2,"event_type":"bind","x":"{}"}}"#,
        "a".repeat(70_000)
    );
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        (
            "bad json",
            r#"{"portal_uid": 1,"#.into(),
            "invalid_json",
            None,
        ),
        ("not an object", "[1,2]".into(), "invalid_body", None),
        (
            "missing portal_uid",
            r#"{"phonish_uid":2,"event_type":"bind"}"#.into(),
            "invalid_field",
            Some("portal_uid"),
        ),
        (
            "missing event_type",
            r#"{"portal_uid":1,"phonish_uid":2}"#.into(),
            "invalid_field",
            Some("event_type"),
        ),
        (
            "unknown field",
            r#"{"portal_uid":1,"phonish_uid":2,"event_type":"bind","extra":1}"#.into(),
            "invalid_field",
            Some("extra"),
        ),
        (
            "string uid",
            r#"{"portal_uid":"1","phonish_uid":2,"event_type":"bind"}"#.into(),
            "invalid_field",
            Some("portal_uid"),
        ),
        (
            "negative uid",
            r#"{"portal_uid":1,"phonish_uid":-2,"event_type":"bind"}"#.into(),
            "invalid_field",
            Some("phonish_uid"),
        ),
        (
            "zero portal",
            r#"{"portal_uid":0,"phonish_uid":2,"event_type":"bind"}"#.into(),
            "invalid_field",
            Some("portal_uid"),
        ),
        (
            "zero phonish",
            r#"{"portal_uid":1,"phonish_uid":0,"event_type":"bind"}"#.into(),
            "invalid_field",
            Some("phonish_uid"),
        ),
        (
            "unknown event_type",
            r#"{"portal_uid":1,"phonish_uid":2,"event_type":"merge"}"#.into(),
            "invalid_field",
            Some("event_type"),
        ),
        (
            "bad timestamp",
            r#"{"portal_uid":1,"phonish_uid":2,"event_type":"bind","event_timestamp":"yesterday"}"#
                .into(),
            "invalid_field",
            Some("event_timestamp"),
        ),
        ("too large", big, "body_too_large", None),
    ];
    for (what, body, code, field) in cases {
        let (status, resp, _) = post_raw(&url, body).await;
        assert_eq!(status, 400, "{what}: {resp}");
        assert_eq!(resp["code"], code, "{what}: {resp}");
        assert!(
            resp["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if let Some(field) = field {
            assert_eq!(resp["field"], field, "{what}: {resp}");
            assert!(
                resp["message"].as_str().unwrap().contains(field),
                "{what}: {resp}"
            );
        }
    }
    // None of them reached the topic.
    assert!(read(&topic, 1, Duration::from_secs(3))
        .await
        .unwrap()
        .is_empty());
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn kill_switch_modes_reload_without_restart_and_off_loses_nothing() {
    let topic = unique("uid-kill");
    create_topic(&topic, 1).await.unwrap();
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ingress.toml");
    let hash = ingress_caller("test", TEST_INGRESS_TOKEN, &["*"], false)
        .token_sha256
        .unwrap();
    let write = |mode: &str| {
        std::fs::write(
            &file,
            format!(
                "reload_interval_ms = 100\n[kafka]\nbootstrap_servers = \"{}\"\n\
                 [uid_notify]\nmode = \"{mode}\"\nretry_after_secs = 7\ntopic = \"{topic}\"\n\
                 [[auth.callers]]\nname = \"test\"\ntoken_sha256 = \"{hash}\"\nroutes = [\"uid-notify\"]\n",
                bootstrap()
            ),
        )
        .unwrap();
    };
    write("off");
    let cfg = switchyard_ingress::IngressConfig::load(Some(&file)).unwrap();
    let ingress = start_ingress(cfg, Some(file.clone())).await.unwrap();
    let url = ingress.url("/v1/uid-notify");
    let body = r#"{"portal_uid":1,"phonish_uid":2,"event_type":"bind"}"#;

    // off: 503 with Retry-After, so the identity provider keeps the event and retries.
    let (status, resp, headers) = post_raw(&url, body).await;
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["code"], "switched_off", "{resp}");
    assert!(resp["message"].is_string());
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    let metrics = reqwest::get(ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"switchyard_ingress_disabled_requests_total{flow="uid-notify"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchyard_ingress_uid_notify_mode{mode="off"} 1"#),
        "{metrics}"
    );
    assert!(read(&topic, 1, Duration::from_secs(3))
        .await
        .unwrap()
        .is_empty());

    // hold, then on, by editing the file; mtime granularity can be coarse, so retry the write.
    for mode in ["hold", "on"] {
        let mut accepted = None;
        for _ in 0..50 {
            write(mode);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (status, resp, _) = post_raw(&url, body).await;
            if status == 200 {
                accepted = Some(resp);
                break;
            }
            assert_eq!(status, 503, "{resp}");
        }
        let resp = accepted.unwrap_or_else(|| panic!("switch never turned to {mode}"));
        assert!(resp["event_id"].is_string(), "{resp}");
        let metrics = reqwest::get(ingress.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "switchyard_ingress_uid_notify_mode{{mode=\"{mode}\"}} 1"
            )),
            "{metrics}"
        );
    }
    // Both hold and on published: two records, none from while it was off.
    assert_eq!(
        read(&topic, 3, Duration::from_secs(10))
            .await
            .unwrap()
            .len(),
        2
    );
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn broker_unreachable_gives_503_with_retry_after() {
    let mut cfg = ingress_config("uid-nowhere");
    cfg.kafka.bootstrap_servers = "127.0.0.1:1".into();
    cfg.kafka.produce_timeout_ms = 1_000;
    let ingress = start_ingress(cfg, None).await.unwrap();
    let (status, resp, headers) = post_raw(
        &ingress.url("/v1/uid-notify"),
        r#"{"portal_uid":1,"phonish_uid":2,"event_type":"bind"}"#,
    )
    .await;
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["code"], "unavailable");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let ready = reqwest::get(ingress.url("/ready"))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(ready, 503);
    let ping = reqwest::get(ingress.url("/ping"))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(ping, 200);
    ingress.stop().await.unwrap();
}
