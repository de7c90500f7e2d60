//! The admin page end to end: headless Debian chromium, driven by playwright-core
//! (`integration-tests/e2e/admin_page.mjs`), opens `/admin` on a real dispatcher, pauses and
//! resumes a subscriber and replays its dead letters from the page; the subscriber must then
//! receive exactly what was clicked.
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `integration-tests/e2e` (`deploy/local/test.sh`
//! installs both); without them the test fails and says so. `SWITCHYARD_UPDATE_SCREENSHOT=1`
//! also writes the README's `docs/admin-page.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Received, Script};
use integration_tests::kafka::{create_topic, read};
use integration_tests::*;
use serde_json::{json, Value};

use crate::support::ingress_calls::post_bind;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "admin-page-e2e-token-0123456789";
const PG_ADMIN: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

fn e2e_dir() -> PathBuf {
    workspace_root().join("integration-tests").join("e2e")
}

fn chromium() -> PathBuf {
    std::env::var_os("SWITCHYARD_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), Into::into)
}

/// The browser, node and playwright-core must be there: a missing one fails the test, it
/// never skips it.
fn check_prerequisites() {
    let browser = chromium();
    assert!(
        browser.exists(),
        "{} is missing: the admin page test needs Debian chromium \
         (`apt-get install chromium`; deploy/local/test.sh installs it)",
        browser.display()
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not on PATH: the admin page test needs node >= 20 and npm"
    );
    let pw = e2e_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "{} is missing: run `npm ci` in integration-tests/e2e (deploy/local/test.sh does)",
        pw.display()
    );
}

/// A database of its own, so attempt-log rows and pauses of earlier runs never show up.
async fn fresh_database() -> String {
    let name = format!("sy_admin_page_{}", uuid::Uuid::now_v7().simple());
    let (client, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    format!("postgres://postgres:postgres@127.0.0.1:5432/{name}")
}

async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap_or_default();
    if let Ok((client, conn)) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// Runs `admin_page.mjs` against `base` and returns the JSON line it prints.
async fn drive_page(base: &str, env: &[(&str, &str)]) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("admin_page.mjs")
        .arg(base)
        .current_dir(e2e_dir())
        .env("ADMIN_TOKEN", TOKEN)
        .env("CHROMIUM", chromium())
        .env("TIMEOUT_MS", "60000")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("admin_page.mjs did not finish within 240 s")
        .expect("start node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "admin_page.mjs failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("admin_page.mjs printed {line:?}: {e}"))
}

fn event_id(r: &Received) -> String {
    r.json()["event_id"].as_str().unwrap_or_default().to_owned()
}

/// `9-<phonish>-bind` is what the dispatcher sends for the events this test posts.
fn token_matches_body(r: &Received) -> bool {
    let body = r.json();
    let expected = format!("{}-{}-bind", body["portal_uid"], body["phonish_uid"]);
    r.header("x-idempotency-token") == Some(expected.as_str())
}

fn screenshot_path() -> PathBuf {
    if std::env::var_os("SWITCHYARD_UPDATE_SCREENSHOT").is_some() {
        return workspace_root().join("docs").join("admin-page.png");
    }
    std::env::temp_dir().join(format!("{}.png", unique("admin-page")))
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a screenshot",
        path.display()
    );
}

#[tokio::test]
async fn a_replay_clicked_on_the_admin_page_reaches_the_subscriber() {
    check_prerequisites();
    let db = fresh_database().await;
    let topic = unique("admin-uid");
    create_topic(&topic, 2).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();

    // "family" is down and dead-letters everything; "audit" is healthy next to it.
    let family = FakeSubscriber::start(Script::AlwaysFail { status: 500 })
        .await
        .unwrap();
    let audit = FakeSubscriber::start(Script::Ok).await.unwrap();
    let mut failing = http_subscriber("family", &topic, &family.url("/v1/uid-notify"));
    failing.max_attempts = Some(2);
    let healthy = http_subscriber("audit", &topic, &audit.url("/v1/uid-notify"));
    let mut cfg = dispatcher_config(vec![failing, healthy]);
    cfg.admin.token = Some(TOKEN.to_owned());
    cfg.attempt_log =
        Some(serde_json::from_value(json!({"database_url": db, "flush_interval_ms": 50})).unwrap());
    let dlq = cfg.dead_letter_topic("family");
    let dispatcher = start_dispatcher(cfg).await.unwrap();

    for p in [1, 2, 3] {
        post_bind(&ingress, 9, p).await;
    }
    assert_eq!(read(&dlq, 3, WAIT).await.unwrap().len(), 3, "dead-lettered");
    assert!(
        audit.wait_delivered(3, WAIT).await,
        "the healthy one got all"
    );
    assert!(family.delivered().is_empty());

    // The subscriber is fixed; the operator replays one record from the page.
    family.set_script(Script::Ok);
    let base = format!("http://{}", dispatcher.addr);
    let shot = screenshot_path();
    let one = drive_page(
        &base,
        &[
            ("SUBSCRIBER", "family"),
            ("REPLAY", "one"),
            ("MIN_DEAD_LETTERS", "3"),
            ("MIN_ATTEMPTS", "1"),
            ("SCREENSHOT", shot.to_str().unwrap()),
        ],
    )
    .await;
    assert_png(&shot);
    let clicked = one["replayed"][0]["event_id"]
        .as_str()
        .expect("the script names the record it replayed")
        .to_owned();
    assert!(
        family.wait_delivered(1, WAIT).await,
        "replayed record delivered"
    );
    // The other two stay dead: only the clicked record went back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = family.delivered();
    assert_eq!(delivered.len(), 1, "only the clicked record: {delivered:?}");
    assert_eq!(event_id(&delivered[0]), clicked);
    assert!(token_matches_body(&delivered[0]), "{delivered:?}");

    // "Replay all" sends every dead letter not replayed by an earlier "replay all": the
    // subscriber ends up with every event (the clicked one maybe twice: it deduplicates).
    let all = drive_page(
        &base,
        &[
            ("SUBSCRIBER", "family"),
            ("REPLAY", "all"),
            ("MIN_DEAD_LETTERS", "3"),
        ],
    )
    .await;
    assert_eq!(all["replayed"].as_array().map(Vec::len), Some(3), "{all}");
    let distinct = |rs: &[Received]| {
        let mut t: Vec<String> = rs
            .iter()
            .filter(|r| r.status < 300)
            .filter_map(|r| r.header("x-idempotency-token").map(str::to_owned))
            .collect();
        t.sort();
        t.dedup();
        t
    };
    assert!(
        family.wait_until(WAIT, |rs| distinct(rs).len() == 3).await,
        "replay all delivered: {:?}",
        distinct(&family.received())
    );
    assert_eq!(
        distinct(&family.received()),
        vec!["9-1-bind", "9-2-bind", "9-3-bind"]
    );
    for r in family.delivered() {
        assert!(token_matches_body(&r), "{r:?}");
    }

    // The page paused and resumed the subscriber: it is running again.
    let subs: Value = reqwest::Client::new()
        .get(format!("{base}/admin/api/subscribers"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let family_state = subs["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "family")
        .map(|s| s["state"].clone());
    assert_eq!(family_state, Some(json!("running")), "{subs}");

    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
    drop_database(&db).await;
}
