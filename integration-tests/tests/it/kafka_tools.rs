//! Kafka's own tools read switchyard's work, as a user would check it: `ConsoleConsumer` reads
//! the record the ingress published, and `ConsumerGroupCommand` shows a dispatcher group's
//! committed offsets at the high watermark after a drain. Both run from the jars that
//! `deploy/local/lib.sh` fetched (`ktool`), against the test broker.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::create_topic;
use integration_tests::*;
use serde_json::{json, Value};

/// Runs one Kafka tool (`ktool <main class> args...`) and returns its stdout.
fn ktool(main_class: &str, args: &[&str]) -> String {
    let lib = workspace_root().join("deploy/local/lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && ktool \"$@\"", lib.display()))
        .arg("ktool")
        .arg(main_class)
        .args(args)
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "{main_class} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn post_bind(url: &str, portal_uid: u64) -> String {
    let resp = ingress_client()
        .post(url)
        .json(&json!({"portal_uid": portal_uid, "phonish_uid": 7, "event_type": "bind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn console_consumer_reads_what_the_ingress_published() {
    let topic = unique("tools-uid");
    create_topic(&topic, 1).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let event_id = post_bind(&ingress.url("/v1/uid-notify"), 4242).await;

    let bs = bootstrap();
    let out = tokio::task::spawn_blocking(move || {
        ktool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                &bs,
                "--topic",
                &topic,
                "--from-beginning",
                "--max-messages",
                "1",
                "--timeout-ms",
                "60000",
                "--property",
                "print.key=true",
                "--property",
                "print.headers=true",
            ],
        )
    })
    .await
    .unwrap();
    // The envelope is protobuf; its string fields (the event id) are readable in the dump.
    assert!(out.contains(&event_id), "event id not in: {out}");
    assert!(
        out.contains("sy-event-type:uid.bind"),
        "headers not in: {out}"
    );
    ingress.stop().await.unwrap();
}

/// `ConsumerGroupCommand --describe` rows of `topic`: partition -> (current offset, log end).
fn group_offsets(group: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let out = ktool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--describe",
            "--group",
            group,
        ],
    );
    // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.len() >= 6 && c[0] == group && c[1] == topic)
        .map(|c| {
            // "-": nothing committed, which is drained only for an empty partition.
            let current = c[3].parse().unwrap_or(0);
            (c[2].parse().unwrap(), (current, c[4].parse().unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn consumer_group_command_shows_the_dispatcher_group_drained() {
    const N: usize = 30;
    let topic = unique("tools-drain");
    create_topic(&topic, 3).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let sub = FakeSubscriber::start(Script::Ok).await.unwrap();
    let cfg = dispatcher_config(vec![http_subscriber("drain", &topic, &sub.url("/hook"))]);
    let group = cfg.group_id("drain");
    let dispatcher = start_dispatcher(cfg).await.unwrap();
    for i in 0..N {
        post_bind(&ingress.url("/v1/uid-notify"), 10_000 + i as u64).await;
    }
    assert!(
        sub.wait_delivered(N, Duration::from_secs(60)).await,
        "delivered {} of {N}",
        sub.delivered().len()
    );

    // Offsets are committed after delivery (auto-commit of stored offsets, every second).
    let deadline = Instant::now() + Duration::from_secs(60);
    let offsets = loop {
        let (g, t) = (group.clone(), topic.clone());
        let offsets = tokio::task::spawn_blocking(move || group_offsets(&g, &t))
            .await
            .unwrap();
        let drained = offsets.len() == 3 && offsets.values().all(|(cur, end)| cur == end);
        if drained || Instant::now() > deadline {
            break offsets;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(offsets.len(), 3, "one row per partition: {offsets:?}");
    for (p, (current, end)) in &offsets {
        assert_eq!(
            current, end,
            "partition {p}: committed offset below the high watermark"
        );
    }
    let total: i64 = offsets.values().map(|(_, end)| end).sum();
    assert_eq!(
        total, N as i64,
        "every published record counted: {offsets:?}"
    );
    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}
