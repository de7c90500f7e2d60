//! Killing the dispatcher process (SIGKILL) mid-stream and starting it again loses nothing.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, produce, producer};
use integration_tests::*;

const EVENTS: u64 = 2_000;

fn spawn_dispatcher(config: &std::path::Path) -> Child {
    // Next to this test's own executable: <target>/<profile>/deps/<test> -> <target>/<profile>.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("switchyard-dispatcher");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins` first",
        bin.display()
    );
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn distinct(sub: &FakeSubscriber) -> HashSet<String> {
    sub.delivered()
        .iter()
        .map(|r| r.json()["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let topic = unique("uid-kill9");
    create_topic(&topic, 3).await.unwrap();
    let p = producer().unwrap();
    let mut ids = HashSet::new();
    for i in 1..=EVENTS {
        let env = bind_envelope(i, "test");
        ids.insert(env.event_id.clone());
        produce(&p, &topic, &(i + 1).to_string(), &env.to_bytes())
            .await
            .unwrap();
    }

    let sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let mut s = http_subscriber("survivor", &topic, &sub.url("/h"));
    s.concurrency = 4;
    let mut cfg = dispatcher_config(vec![s]);
    cfg.listen = "127.0.0.1:0".into();
    let dir = std::env::temp_dir().join(unique("kill9"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dispatcher.toml");
    std::fs::write(&file, toml::to_string(&cfg).unwrap()).unwrap();

    let mut first = spawn_dispatcher(&file);
    assert!(
        sub.wait_delivered(300, Duration::from_secs(60)).await,
        "first run delivered too little"
    );
    first.kill().unwrap(); // SIGKILL: no drain, no final commit
    first.wait().unwrap();
    let before = distinct(&sub).len();
    assert!(
        before < EVENTS as usize,
        "killed too late to prove anything ({before})"
    );

    let mut second = spawn_dispatcher(&file);
    let all = sub
        .wait_until(Duration::from_secs(120), |_| {
            distinct(&sub).len() >= EVENTS as usize
        })
        .await;
    let _ = second.kill();
    let _ = second.wait();
    let got = distinct(&sub);
    assert!(
        all,
        "only {} of {EVENTS} distinct events delivered",
        got.len()
    );
    assert_eq!(got, ids, "exactly the produced events, none lost");
}
