//! Hot reload: the dispatcher watches its config file. Subscribers are added, changed and
//! removed without a restart and without disturbing the others; a bad file changes nothing
//! and is counted.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use integration_tests::fake_http::{FakeSubscriber, Script};
use integration_tests::kafka::{create_topic, producer};
use integration_tests::*;
use switchyard_dispatcher::DispatcherConfig;

use crate::engine_support::{envelope, eventually, metric, produce_to};

fn write(file: &Path, cfg: &DispatcherConfig) {
    // Write then rename, as an editor or a ConfigMap update does: never a half-written file.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, toml::to_string(cfg).expect("config as TOML")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The distinct events (by idempotency token) `sub` acknowledged.
fn ids(sub: &FakeSubscriber) -> HashSet<String> {
    sub.delivered()
        .iter()
        .filter_map(|r| {
            r.header(switchyard_dispatcher::http_target::IDEMPOTENCY_HEADER)
                .map(str::to_owned)
        })
        .collect()
}

async fn reloads(metrics_url: &str, result: &str) -> f64 {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("switchyard_dispatch_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_are_added_changed_and_removed_from_the_watched_file() {
    let topic = unique("reload");
    create_topic(&topic, 2).await.unwrap();
    let a = FakeSubscriber::start(Script::Ok).await.unwrap();
    let b = FakeSubscriber::start(Script::Ok).await.unwrap();
    let c = FakeSubscriber::start(Script::Ok).await.unwrap();
    let mut cfg = dispatcher_config(vec![http_subscriber("a", &topic, &a.url("/hook"))]);
    cfg.reload_interval_ms = 200;
    let dir = std::env::temp_dir().join(unique("reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dispatcher.toml");
    write(&file, &cfg);
    let loaded = DispatcherConfig::load(Some(&file)).expect("the written file loads");
    let dispatcher = start_dispatcher_watching(loaded, Some(file.clone()))
        .await
        .unwrap();
    let metrics_url = dispatcher.url("/metrics");
    let p = producer().unwrap();
    let mut next = 0u64;
    let mut send = |n: u64| {
        let (from, p, topic) = (next, p.clone(), topic.clone());
        next += n;
        async move {
            for i in from..from + n {
                produce_to(&p, &topic, (i % 2) as i32, &format!("k{i}"), &envelope(i)).await;
            }
        }
    };

    send(5).await;
    assert!(a.wait_delivered(5, Duration::from_secs(30)).await);

    // Added: b reads the topic from the start; a goes on untouched.
    cfg.subscribers
        .push(http_subscriber("b", &topic, &b.url("/hook")));
    write(&file, &cfg);
    assert!(
        b.wait_delivered(5, Duration::from_secs(30)).await,
        "the added subscriber b got {} of 5",
        ids(&b).len()
    );
    send(5).await;
    assert!(a.wait_delivered(10, Duration::from_secs(30)).await);
    assert!(b.wait_delivered(10, Duration::from_secs(30)).await);
    assert_eq!(
        metric(
            &metrics_url,
            "switchyard_dispatch_subscriber_starts_total",
            "a"
        )
        .await,
        Some(1.0),
        "adding b must not restart a"
    );

    // A bad file: rejected and counted; both keep delivering.
    let mut bad = cfg.clone();
    bad.subscribers[1] = http_subscriber("b", &topic, "ftp://nowhere/hook");
    write(&file, &bad);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&metrics_url, "rejected").await >= 1.0
        })
        .await,
        "a bad file is counted as rejected"
    );
    send(3).await;
    assert!(a.wait_delivered(13, Duration::from_secs(30)).await);
    assert!(b.wait_delivered(13, Duration::from_secs(30)).await);

    // Changed and removed at once: b moves to c (restarted in its group, so only what came
    // after its committed offsets goes to c), a is gone.
    cfg.subscribers = vec![http_subscriber("b", &topic, &c.url("/hook"))];
    write(&file, &cfg);
    assert!(
        eventually(Duration::from_secs(15), || async {
            metric(
                &metrics_url,
                "switchyard_dispatch_subscriber_starts_total",
                "b",
            )
            .await
                == Some(2.0)
        })
        .await,
        "b restarted once"
    );
    send(4).await;
    assert!(
        c.wait_delivered(4, Duration::from_secs(30)).await,
        "the changed subscriber's new target got {} of 4",
        ids(&c).len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ids(&a).len(), 13, "the removed subscriber got nothing new");
    assert_eq!(
        ids(&b).len(),
        13,
        "b's old target got nothing after the change"
    );
    assert_eq!(
        ids(&c).len(),
        4,
        "b resumed at its committed offsets: nothing before the change went to c"
    );
    assert!(reloads(&metrics_url, "applied").await >= 2.0);

    dispatcher.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn integrations(entries: &[(&str, &FakeSubscriber)]) -> String {
    entries
        .iter()
        .map(|(tag, sub)| {
            format!(
                "[[integrations]]\ntag = \"{tag}\"\n[[integrations.targets]]\nname = \"svc\"\n\
                 target = {{ kind = \"http\", url = \"{}\", timeout_ms = 2000 }}\n",
                sub.url("/seen")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_integration_added_to_the_integrations_file_starts_without_a_restart() {
    let marks = unique("marks");
    create_topic(&marks, 2).await.unwrap();
    let promo = FakeSubscriber::start(Script::Ok).await.unwrap();
    let news = FakeSubscriber::start(Script::Ok).await.unwrap();
    let dir = std::env::temp_dir().join(unique("reload-marks"));
    std::fs::create_dir_all(&dir).unwrap();
    let integrations_file = dir.join("integrations.toml");
    std::fs::write(&integrations_file, integrations(&[("promo", &promo)])).unwrap();

    let mut icfg = ingress_config("unused");
    icfg.mark_notify.topic = marks.clone();
    let ingress = start_ingress(icfg, None).await.unwrap();
    let mut dcfg = dispatcher_config(Vec::new());
    dcfg.reload_interval_ms = 200;
    dcfg.mark_notify = Some(switchyard_dispatcher::config::MarkNotifySection {
        topic: marks.clone(),
        integrations_file: integrations_file.clone(),
    });
    let file = dir.join("dispatcher.toml");
    write(&file, &dcfg);
    let dispatcher = start_dispatcher_watching(dcfg, Some(file)).await.unwrap();
    let metrics_url = dispatcher.url("/metrics");

    let mark = |tag: &'static str| {
        ingress_client()
            .post(ingress.url("/4.0/mark-notify/v1/seen"))
            .header("X-YaTaxi-UserId", "user-1")
            .header("X-Yandex-UID", "4001")
            .json(&serde_json::json!({"tag": tag, "id": "n-1"}))
            .send()
    };
    assert_eq!(mark("news").await.unwrap().status(), 200);
    assert_eq!(mark("promo").await.unwrap().status(), 200);
    assert!(promo.wait_delivered(1, Duration::from_secs(30)).await);

    // Only the integrations file changes: the news integration starts, reads the marks topic
    // from its start (a new group) and gets the mark sent before it existed.
    let both = integrations(&[("promo", &promo), ("news", &news)]);
    let tmp = integrations_file.with_extension("tmp");
    std::fs::write(&tmp, both).unwrap();
    std::fs::rename(&tmp, &integrations_file).unwrap();
    assert!(
        news.wait_delivered(1, Duration::from_secs(30)).await,
        "the added news integration got the earlier news mark"
    );
    assert_eq!(news.delivered()[0].json()["tag"], "news");
    assert_eq!(
        metric(
            &metrics_url,
            "switchyard_dispatch_subscriber_starts_total",
            "mark-notify.promo.svc"
        )
        .await,
        Some(1.0),
        "the promo integration was not restarted"
    );
    assert_eq!(promo.delivered().len(), 1, "promo got only its own mark");

    dispatcher.stop().await.unwrap();
    ingress.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
