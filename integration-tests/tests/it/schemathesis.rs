//! Every HTTP API under attack (issue 15.5): schemathesis runs against the ingress, the
//! dispatcher's admin API and deptrans, each started here with its published OpenAPI document
//! (`schemas/openapi/*.json`). It sends examples, boundary values, random valid data, invalid
//! (negative) data and stateful sequences, and checks every answer: no 5xx, a status, content
//! type, headers and body the document declares, invalid data refused, valid data accepted,
//! a missing credential refused (schemathesis's default: every check). A run passes only with 0
//! failures. `integration-tests/schemathesis/<api>.toml` lists the few things an OpenAPI
//! document cannot state (an opaque cursor, headers that depend on each other), with reasons.
//!
//! schemathesis comes from PyPI; `deploy/local/test.sh` installs it into `.local/schemathesis`
//! (or set `SWITCHYARD_SCHEMATHESIS` to a `schemathesis` executable). Each run's summary is
//! printed here and kept in `target/schemathesis/<api>.txt` beside its JUnit report; the test
//! command prints the summaries after the tests.

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::{
    dispatcher_config, http_subscriber, ingress_config, start_dispatcher, start_ingress, unique,
    workspace_root, TEST_INGRESS_TOKEN,
};

use crate::support::deptrans_common::{env, start, API_KEY, MOSCOW};

/// Examples per operation and phase: enough that every operation sees boundary, random and
/// invalid inputs, few enough for a CI run of ~a minute per API.
const MAX_EXAMPLES: &str = "40";

fn schemathesis() -> PathBuf {
    match std::env::var_os("SWITCHYARD_SCHEMATHESIS") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".local/schemathesis/bin/schemathesis"),
    }
}

/// Runs schemathesis against `document` served at `base`, sending `headers` on every request;
/// panics with its report unless it found nothing.
async fn attack(api: &str, base: &str, headers: &[String]) {
    let exe = schemathesis();
    assert!(
        exe.exists(),
        "{} is missing: deploy/local/test.sh installs it (or run \
         `python3 -m venv .local/schemathesis && .local/schemathesis/bin/pip install \
         schemathesis==4.32.5`)",
        exe.display()
    );
    let root = workspace_root();
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("schemathesis");
    std::fs::create_dir_all(&out_dir).expect("report dir");
    let document = root.join(format!("schemas/openapi/{api}.json"));
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("--config-file")
        .arg(root.join(format!("integration-tests/schemathesis/{api}.toml")))
        .arg("run")
        .arg(&document)
        .args(["--url", base])
        .args(["--mode", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "15500"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .args(["--workers", "2"])
        .arg("--no-color")
        .args(["--report", "junit"])
        .arg("--report-junit-path")
        .arg(out_dir.join(format!("{api}.junit.xml")))
        .kill_on_drop(true);
    for h in headers {
        cmd.args(["--header", h]);
    }
    let (mut run, mut text) = run_once(&mut cmd).await;
    // A crash of schemathesis itself (a Python exception it reports as "Runtime Error") is no
    // verdict on the API: that one case is run again, once, and said so. Findings never are.
    if !run.status.success() && text.contains("Runtime Error") && !text.contains("Failures:") {
        println!("schemathesis crashed (not a finding); running it again:\n{text}");
        (run, text) = run_once(&mut cmd).await;
    }
    std::fs::write(out_dir.join(format!("{api}.txt")), &text).expect("write summary");
    println!("{text}");
    assert!(
        run.status.success(),
        "schemathesis found problems in the {api} API ({}):\n{text}",
        run.status
    );
}

async fn run_once(cmd: &mut tokio::process::Command) -> (std::process::Output, String) {
    let run = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (run, text)
}

#[tokio::test]
async fn the_ingress_api_holds_against_schemathesis() {
    let topic = unique("st-ingress");
    integration_tests::kafka::create_topic(&topic, 1)
        .await
        .unwrap();
    let mut cfg = ingress_config(&topic);
    cfg.driver_status.topic = topic.clone();
    cfg.mark_notify.topic = topic.clone();
    // The registered domain events on topics of this test's own.
    let domains = crate::domain_events::topics(1).await;
    cfg.domain_events.registry_file = Some(crate::domain_events::registry(&domains));
    let ingress = start_ingress(cfg, None).await.unwrap();
    attack(
        "ingress",
        &format!("http://{}", ingress.addr),
        &[format!("Authorization: Bearer {TEST_INGRESS_TOKEN}")],
    )
    .await;
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn the_admin_api_holds_against_schemathesis() {
    const ADMIN_TOKEN: &str = "admin-token-for-schemathesis";
    let topic = unique("st-admin");
    integration_tests::kafka::create_topic(&topic, 1)
        .await
        .unwrap();
    let sub = integration_tests::fake_http::FakeSubscriber::start(
        integration_tests::fake_http::Script::Ok,
    )
    .await
    .unwrap();
    let name = unique("st");
    let mut cfg = dispatcher_config(vec![http_subscriber(&name, &topic, &sub.url("/hook"))]);
    cfg.admin.token = Some(ADMIN_TOKEN.into());
    // On, so that the attempts endpoint answers with rows rather than its 404.
    cfg.attempt_log = Some(integration_tests::attempt_log_config().await.unwrap());
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    attack(
        "admin",
        &format!("http://{}", dispatcher.addr),
        &[format!("Authorization: Bearer {ADMIN_TOKEN}")],
    )
    .await;
    dispatcher.stop().await.unwrap();
}

#[tokio::test]
async fn the_deptrans_api_holds_against_schemathesis() {
    let env = env(0).await;
    let f = &env.fakes.state;
    f.add_driver("p1", "d1", "77AA123456", &["econom"], MOSCOW.0, MOSCOW.1);
    let mut cfg = env.config();
    cfg.consumer.enabled = false;
    let svc = start(cfg).await;
    attack(
        "deptrans",
        &format!("http://{}", svc.addr),
        &[format!("X-API-Key: {API_KEY}")],
    )
    .await;
    svc.stop().await;
}
