//! The admin API and the `switchyard` CLI against a running dispatcher, the real broker and
//! PostgreSQL: token, subscribers, pause and resume (kept in the database across restarts),
//! the attempt log, the dead-letter browser and replays of dead letters and topic ranges.

use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::create_topic;
use integration_tests::*;
use serde_json::{json, Value};
use switchyard_cli::client::{AdminClient, ClientError};
use switchyard_dispatcher::replay::{DeadLetterSelection, ReplaySource, TopicSelection};

use crate::support::ingress_calls::post_bind;
use crate::support::openapi::OpenApi;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "test-admin-token-0123456789";

/// Polls the subscriber list until `pred` holds for `name`.
/// The typed answers as JSON, so the checks below read like the documented bodies.
fn json_of<T: serde::Serialize>(typed: Vec<T>) -> Vec<Value> {
    typed
        .into_iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect()
}

async fn wait_subscriber(client: &AdminClient, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let subs = json_of(client.subscribers().await.unwrap());
        let s = subs.into_iter().find(|s| s["name"] == name).unwrap();
        if pred(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscriber never reached the state: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_openapi_check_refuses_answers_that_break_the_document() {
    let spec = OpenApi::load("admin.json");
    let view = json!({"subscribers": [{"name": "a", "topics": ["t"], "target": "http://x", "state": "running",
        "lag": 0, "delivered": 1, "failed_attempts": 0, "parked": 0, "dead_lettered": 0,
        "delivered_per_sec": 0.0, "failed_per_sec": 0.0, "breaker": "closed", "breaker_transitions": 0,
        "parking_failed": 0}]});
    spec.check("get", "/admin/api/subscribers", 200, &view);
    for wrong in [
        json!({"subscribers": [{"name": "a"}]}),
        json!({"subscribers": [{"name": 1, "topics": ["t"], "target": "http://x", "state": "running",
            "lag": 0, "delivered": -1, "failed_attempts": 0, "parked": 0, "dead_lettered": 0,
            "delivered_per_sec": 0.0, "failed_per_sec": 0.0}]}),
        json!({"code": "unauthorized"}),
    ] {
        let refused =
            std::panic::catch_unwind(|| spec.check("get", "/admin/api/subscribers", 200, &wrong));
        assert!(refused.is_err(), "accepted {wrong}");
    }
}

fn tokens(sub: &FakeSubscriber) -> Vec<String> {
    let mut t: Vec<String> = sub
        .delivered()
        .iter()
        .map(|r| r.header("x-idempotency-token").unwrap().to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn dead_letters_are_browsed_logged_and_replayed_through_the_api() {
    let topic = unique("admin-uid");
    create_topic(&topic, 1).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let sub = FakeSubscriber::start(Script::AlwaysFail { status: 502 })
        .await
        .unwrap();
    let name = unique("adm");
    let mut s = http_subscriber(&name, &topic, &sub.url("/hook"));
    s.max_attempts = Some(2);
    let mut cfg = dispatcher_config(vec![s]);
    cfg.admin.token = Some(TOKEN.into());
    cfg.attempt_log = Some(attempt_log_config().await.unwrap());
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let base = format!("http://{}", dispatcher.addr);
    let client = AdminClient::new(&base, TOKEN);

    // No token, wrong token: 401 with a JSON error.
    for auth in [None, Some("Bearer wrong-token-wrong-token")] {
        let mut req = reqwest::Client::new().get(format!("{base}/admin/api/subscribers"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }

    post_bind(&ingress, 5, 1).await;
    post_bind(&ingress, 5, 2).await;
    let s = wait_subscriber(&client, &name, |s| s["dead_letters"] == 2).await;
    assert_eq!(s["state"], "running");
    assert_eq!(s["dead_lettered"], 2);
    assert_eq!(s["failed_attempts"], 4, "two attempts each: {s}");
    assert_eq!(s["target"], sub.url("/hook"));

    // The dead-letter browser shows each record's last error and attempts.
    let records = json_of(client.dead_letters(&name, 10).await.unwrap());
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["attempts"], 2, "{r}");
        assert_eq!(r["last_error"], "http status 502");
        assert_eq!(r["event_type"], "uid.bind");
        assert_eq!(r["payload"]["payload"]["account_link"]["portal_uid"], 5);
        assert_eq!(r["replayed"], false);
    }

    // The attempt log has every attempt with status, latency and the answer's start.
    let deadline = std::time::Instant::now() + WAIT;
    let attempts = loop {
        let a = json_of(client.attempts(Some(&name), 100).await.unwrap());
        if a.len() >= 4 || std::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    for a in &attempts {
        assert_eq!(a["outcome"], "failed");
        assert_eq!(a["status"], 502);
        assert_eq!(a["response_excerpt"], "scripted");
        assert_eq!(a["error"], "http status 502");
        assert!(a["latency_ms"].as_i64().unwrap() >= 0);
    }
    let mut numbers: Vec<i64> = attempts
        .iter()
        .map(|a| a["attempt"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 1, 2, 2]);

    // The subscriber is fixed; replay one dead letter, then the rest.
    sub.set_script(Script::Ok);
    let one = records
        .iter()
        .find(|r| r["key"] == "2")
        .expect("record of phonish 2");
    let single = ReplaySource::DeadLetters(DeadLetterSelection {
        from_beginning: false,
        partition: Some(one["partition"].as_i64().unwrap() as i32),
        offset: one["offset"].as_i64(),
    });
    let mut seen = (0, 0);
    let job = client
        .replay(&name, &single, |d, t| seen = (d, t))
        .await
        .unwrap();
    assert_eq!((job.state.as_str(), job.done, job.total), ("done", 1, 1));
    assert_eq!(seen, (1, 1));
    assert!(sub.wait_delivered(1, WAIT).await);
    assert_eq!(tokens(&sub), vec!["5-2-bind"]);

    let all = ReplaySource::DeadLetters(DeadLetterSelection::default());
    let job = client.replay(&name, &all, |_, _| {}).await.unwrap();
    assert_eq!((job.state.as_str(), job.done), ("done", 2));
    assert!(sub.wait_delivered(3, WAIT).await);
    assert_eq!(tokens(&sub), vec!["5-1-bind", "5-2-bind", "5-2-bind"]);
    wait_subscriber(&client, &name, |s| s["dead_letters"] == 0).await;
    let again = client.replay(&name, &all, |_, _| {}).await.unwrap();
    assert_eq!(
        again.done, 0,
        "a replay of everything remembers its position"
    );

    // A topic's offset range, replayed to this subscriber only.
    let range = ReplaySource::Topic(TopicSelection {
        topic: topic.clone(),
        partition: Some(0),
        from_offset: Some(0),
        to_offset: Some(0),
        from_time: None,
        to_time: None,
    });
    let job = client.replay(&name, &range, |_, _| {}).await.unwrap();
    assert_eq!((job.state.as_str(), job.done), ("done", 1));
    assert!(sub.wait_delivered(4, WAIT).await);
    assert_eq!(
        tokens(&sub),
        vec!["5-1-bind", "5-1-bind", "5-2-bind", "5-2-bind"]
    );

    // A time range from before the first record to now takes both.
    let times = ReplaySource::Topic(TopicSelection {
        topic: topic.clone(),
        partition: None,
        from_offset: None,
        to_offset: None,
        from_time: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        to_time: Some(chrono::Utc::now() + chrono::Duration::seconds(1)),
    });
    let job = client.replay(&name, &times, |_, _| {}).await.unwrap();
    assert_eq!((job.state.as_str(), job.done), ("done", 2));
    assert!(sub.wait_delivered(6, WAIT).await);

    // Bad input names the field; unknown subscribers are 404.
    let http = reqwest::Client::new();
    for (body, field) in [
        (json!({"source": "topic"}), "topic"),
        (
            json!({"source": "topic", "topic": topic, "from_offset": "zero"}),
            "from_offset",
        ),
        (json!({"source": "everything"}), "source"),
    ] {
        let resp = http
            .post(format!("{base}/admin/api/subscribers/{name}/replay"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], "invalid_body");
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
    let missing = client.set_paused("nobody", true).await;
    assert!(matches!(missing, Err(ClientError::Api { status: 404, .. })));
    let bad_topic = client
        .replay(
            &name,
            &ReplaySource::Topic(TopicSelection {
                topic: unique("no-such-topic"),
                partition: None,
                from_offset: None,
                to_offset: None,
                from_time: None,
                to_time: None,
            }),
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(bad_topic.state, "failed");
    assert!(bad_topic.error.unwrap().contains("does not exist"));

    // Every answer, success or error, is what the published OpenAPI document says it is.
    let spec = OpenApi::load("admin.json");
    let api = |method: reqwest::Method, path: String| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN)
    };
    let subs = format!("/admin/api/subscribers/{name}");
    let checks = [
        (
            "get",
            "/admin/api/subscribers",
            api(reqwest::Method::GET, "/admin/api/subscribers".into()),
        ),
        (
            "get",
            "/admin/api/subscribers/{name}/dead-letters",
            api(reqwest::Method::GET, format!("{subs}/dead-letters?limit=5")),
        ),
        (
            "get",
            "/admin/api/attempts",
            api(
                reqwest::Method::GET,
                format!("/admin/api/attempts?subscriber={name}&limit=5"),
            ),
        ),
        (
            "get",
            "/admin/api/attempts",
            http.get(format!("{base}/admin/api/attempts")),
        ),
        (
            "post",
            "/admin/api/subscribers/{name}/pause",
            api(reqwest::Method::POST, format!("{subs}/pause")),
        ),
        (
            "post",
            "/admin/api/subscribers/{name}/resume",
            api(reqwest::Method::POST, format!("{subs}/resume")),
        ),
        (
            "post",
            "/admin/api/subscribers/{name}/pause",
            api(
                reqwest::Method::POST,
                "/admin/api/subscribers/nobody/pause".into(),
            ),
        ),
        (
            "post",
            "/admin/api/subscribers/{name}/replay",
            api(reqwest::Method::POST, format!("{subs}/replay"))
                .json(&json!({"source": "everything"})),
        ),
        (
            "get",
            "/admin/api/jobs/{id}",
            api(reqwest::Method::GET, "/admin/api/jobs/no-such-job".into()),
        ),
    ];
    let mut statuses = Vec::new();
    for (method, template, req) in checks {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        spec.check(method, template, status, &body);
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 401, 200, 200, 404, 400, 404]);
    let accepted = api(reqwest::Method::POST, format!("{subs}/replay"))
        .json(&json!({"source": "topic", "topic": unique("no-such-topic"), "from_offset": 0, "to_offset": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    spec.check(
        "post",
        "/admin/api/subscribers/{name}/replay",
        202,
        &accepted,
    );
    let job_id = accepted["job_id"].as_str().expect("job_id");
    let job = api(reqwest::Method::GET, format!("/admin/api/jobs/{job_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(job.status().as_u16(), 200);
    spec.check(
        "get",
        "/admin/api/jobs/{id}",
        200,
        &job.json().await.unwrap(),
    );

    // Requests by route and status, dead letters waiting and the attempt log's rows exported.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing in\n{metrics}"))
    };
    assert_eq!(
        value(
            r#"switchyard_dispatch_http_requests_total{route="/admin/api/subscribers",status="401"} "#
        ),
        2.0
    );
    assert!(
        value(
            r#"switchyard_dispatch_http_requests_total{route="/admin/api/subscribers",status="200"} "#
        ) >= 1.0
    );
    assert_eq!(
        value(&format!(
            r#"switchyard_dispatch_dead_letters_waiting{{subscriber="{name}"}} "#
        )),
        0.0
    );
    assert!(value("switchyard_dispatch_attempt_log_written_total ") >= 4.0);
    assert_eq!(value("switchyard_dispatch_attempt_log_dropped_total "), 0.0);

    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_pause_holds_deliveries_and_survives_a_restart() {
    let topic = unique("admin-pause");
    create_topic(&topic, 2).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let name = unique("paused");
    let mut cfg = dispatcher_config(vec![http_subscriber(&name, &topic, &sub.url("/p"))]);
    cfg.admin.token = Some(TOKEN.into());
    cfg.attempt_log = Some(attempt_log_config().await.unwrap());
    let dispatcher = start_dispatcher(cfg.clone()).await.unwrap();
    let base = format!("http://{}", dispatcher.addr);
    let client = AdminClient::new(&base, TOKEN);

    post_bind(&ingress, 7, 1).await;
    assert!(sub.wait_delivered(1, WAIT).await);

    // Paused with the CLI, as an operator would.
    let out = tokio::process::Command::new(workspace_bin("switchyard"))
        .args(["--admin-url", &base, "pause", &name])
        .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .expect("run the switchyard CLI (cargo build --release --bins first)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{name} paused")
    );

    for p in 2..=5 {
        post_bind(&ingress, 7, p).await;
    }
    // The records wait: none arrives while paused (the dispatcher keeps polling the group).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sub.delivered().len(), 1, "nothing delivered while paused");
    wait_subscriber(&client, &name, |s| {
        s["state"] == "paused" && s["lag"].as_i64() > Some(0)
    })
    .await;

    // A restarted dispatcher reads the pause back from the database.
    dispatcher.stop().await.unwrap();
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    let base = format!("http://{}", dispatcher.addr);
    let client = AdminClient::new(&base, TOKEN);
    wait_subscriber(&client, &name, |s| s["state"] == "paused").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sub.delivered().len(), 1, "still paused after the restart");

    let out = tokio::process::Command::new(workspace_bin("switchyard"))
        .args(["--admin-url", &base, "--admin-token", TOKEN, "subscribers"])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&name) && l.contains("paused")),
        "{table}"
    );

    client.set_paused(&name, false).await.unwrap();
    assert!(sub.wait_delivered(5, WAIT).await, "delivered after resume");
    let mut t = tokens(&sub);
    t.dedup();
    assert_eq!(
        t,
        vec!["7-1-bind", "7-2-bind", "7-3-bind", "7-4-bind", "7-5-bind"]
    );
    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}
