//! Operator actions against the real broker: dead-letter replay, decoding records for `tail`,
//! producing JSON events.

use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, read};
use integration_tests::*;
use serde_json::json;
use switchyard_cli::records;
use switchyard_dispatcher::admin;
use switchyard_dispatcher::replay::{replay, DeadLetterSelection, ReplaySource};

use crate::support::ingress_calls::post_bind;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn dead_letters_are_replayed_to_the_recovered_subscriber_once() {
    let topic = unique("ops-uid");
    create_topic(&topic, 2).await.unwrap();
    let ingress = start_ingress(ingress_config(&topic), None).await.unwrap();
    let sub = FakeSubscriber::start(Script::AlwaysFail { status: 500 })
        .await
        .unwrap();
    let mut s = http_subscriber("replayed", &topic, &sub.url("/r"));
    s.max_attempts = Some(2);
    let cfg = dispatcher_config(vec![s]);
    let dlq = cfg.dead_letter_topic("replayed");
    let plan = switchyard_dispatcher::Plan::resolve(cfg.clone()).unwrap();
    let dispatcher = start_dispatcher(cfg.clone()).await.unwrap();

    for p in [1, 2, 3] {
        post_bind(&ingress, 9, p).await;
    }
    assert_eq!(
        read(&dlq, 3, WAIT).await.unwrap().len(),
        3,
        "all three dead-lettered"
    );
    assert!(sub.delivered().is_empty());

    // The subscriber is fixed; the operator replays its dead letters.
    sub.set_script(Script::Ok);
    let mut last = (0, 0);
    let n = replay(&plan, "replayed", &all_dead_letters(), |d, t| last = (d, t))
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(last, (3, 3), "progress reported up to the total");
    assert!(
        sub.wait_delivered(3, WAIT).await,
        "replayed records delivered"
    );
    let mut tokens: Vec<String> = sub
        .delivered()
        .iter()
        .map(|r| r.header("x-idempotency-token").unwrap().to_owned())
        .collect();
    tokens.sort();
    assert_eq!(tokens, vec!["9-1-bind", "9-2-bind", "9-3-bind"]);

    // Replay remembers its position: nothing new to replay.
    let again = replay(&plan, "replayed", &all_dead_letters(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(again, 0);
    let unknown = replay(&plan, "nobody", &all_dead_letters(), |_, _| {}).await;
    assert!(matches!(
        unknown,
        Err(admin::AdminError::UnknownSubscriber(_))
    ));
    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
}

fn all_dead_letters() -> ReplaySource {
    ReplaySource::DeadLetters(DeadLetterSelection::default())
}

#[tokio::test]
async fn produced_json_events_decode_for_tail() {
    let topic = unique("ops-tail");
    create_topic(&topic, 1).await.unwrap();
    let id = records::produce_json(
        &kafka_settings(),
        &topic,
        "user-1",
        "users.user_created",
        1,
        r#"{"user_id": "u-1", "role": "worker"}"#,
    )
    .await
    .unwrap();
    let records = read(&topic, 1, WAIT).await.unwrap();
    let line = records::record_json(&records[0]);
    assert_eq!(line["key"], "user-1");
    assert_eq!(line["headers"]["sy-event-type"], "users.user_created");
    assert_eq!(line["value"]["event_id"], id.as_str());
    assert_eq!(line["value"]["event_type"], "users.user_created");
    assert_eq!(
        line["value"]["payload"]["json"],
        json!({"user_id": "u-1", "role": "worker"})
    );
    let bad = records::produce_json(&kafka_settings(), &topic, "k", "t", 1, "{not json").await;
    assert!(matches!(bad, Err(admin::AdminError::Json(_))));
}
