//! The reduced fault run of the test command (issue 15.3): load through two ingress processes
//! to two dispatcher replicas on the three-node cluster while the partition leader, a
//! dispatcher replica and a subscriber (503 with `Retry-After`) fail; nothing acknowledged is
//! lost, nothing is duplicated under another token, and no secret reaches a process log.
//! The seed is printed; `FAULTS_SEED=<seed>` replays a run. Larger runs: the `faults` binary.

use std::time::Duration;

use integration_tests::faults::plan::{new_seed, Fault, Holds};
use integration_tests::faults::run::{run, RunConfig};
use integration_tests::unique;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_under_faults() {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(new_seed);
    println!("faults: seed {seed} (FAULTS_SEED={seed} replays it)");
    let cfg = RunConfig {
        seed,
        events: 10_000,
        rate: 200,
        keys: 25,
        faults: vec![
            Fault::LeaderKill,
            Fault::DispatcherKill,
            Fault::Subscriber503,
        ],
        holds: Holds::short(),
        bearer: None,
        drain_timeout: Duration::from_secs(60),
        dir: std::env::temp_dir().join(unique("faults-it")),
    };
    let out = run(&cfg).await.unwrap();
    println!("{out}");
    let r = &out.report;
    assert_eq!(out.injected.len(), 3, "every fault was injected");
    assert_eq!(
        (out.driver.acks.len() + out.driver.gave_up + out.driver.rejected.len()) as u64,
        cfg.events,
        "every event acknowledged, given up or rejected"
    );
    assert!(
        out.driver.rejected.is_empty(),
        "ingress rejected valid events: {:?}",
        out.driver.rejected
    );
    assert!(
        r.acknowledged() as u64 > cfg.events * 9 / 10,
        "most events acknowledged despite the faults"
    );
    assert_eq!(r.lost(), 0, "acknowledged events lost (seed {seed})");
    assert_eq!(
        r.duplicates_other_token(),
        0,
        "a redelivery carried another idempotency token (seed {seed})"
    );
    let statuses = r.sinks.iter().find(|s| s.sink == "topic:statuses").unwrap();
    assert_eq!(
        statuses.inversions,
        Some(0),
        "one driver's acknowledged statuses are stored in the order they were acknowledged"
    );
    assert!(out.leaked.is_empty(), "secrets in logs: {:?}", out.leaked);
}
