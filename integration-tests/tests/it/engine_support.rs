//! Shared pieces of the delivery-engine tests: envelopes with known ids, records produced to
//! a chosen partition, the dispatcher's metrics and admin view read back, and what a fake
//! subscriber got.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use events::v1::{envelope::Payload, AccountLink, LinkEvent};
use events::{event_type, Envelope};
use integration_tests::fake_http::FakeSubscriber;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_dispatcher::admin_api::{SubscriberList, SubscriberView};

/// A uid-bind envelope numbered `i`.
pub(crate) fn envelope(i: u64) -> Envelope {
    let link = AccountLink {
        portal_uid: i,
        phonish_uid: i + 1,
        event: LinkEvent::Bind.into(),
    };
    Envelope::new(
        event_type::UID_BIND,
        1,
        Utc::now(),
        "test",
        link.idempotency_key(),
        Payload::AccountLink(link),
    )
}

/// Produces `env` with `key` to exactly `partition` of `topic`.
pub(crate) async fn produce_to(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    env: &Envelope,
) {
    let bytes = env.to_bytes();
    p.send(
        FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(&bytes),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("test produce");
}

/// The value of gauge/counter `name` with label `subscriber` on the dispatcher's `/metrics`.
pub(crate) async fn metric(metrics_url: &str, name: &str, subscriber: &str) -> Option<f64> {
    let text = reqwest::get(metrics_url).await.ok()?.text().await.ok()?;
    let prefix = format!("{name}{{subscriber=\"{subscriber}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` every 50 ms until it holds or `within` passes.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscriber `name` as the admin API at `base` shows it (bearer `token`).
pub(crate) async fn subscriber_view(base: &str, token: &str, name: &str) -> Option<SubscriberView> {
    let list: SubscriberList = reqwest::Client::new()
        .get(format!("{base}/admin/api/subscribers"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    list.subscribers.into_iter().find(|s| s.name == name)
}

/// The event ids `sub` answered 2xx to.
pub(crate) fn delivered_ids(sub: &FakeSubscriber) -> HashSet<String> {
    sub.delivered()
        .iter()
        .filter_map(|r| r.json()["event_id"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `sub` answers 2xx to every one of `ids` within `within`.
pub(crate) async fn all_delivered(
    sub: &FakeSubscriber,
    ids: &HashSet<String>,
    within: Duration,
) -> bool {
    eventually(within, || async { delivered_ids(sub).is_superset(ids) }).await
}
