//! deptrans under faults (issue 15.4): KRT is down for 60 s while statuses keep coming; during
//! the outage PostgreSQL restarts for real (its own server, `-m immediate`) and deptrans, a
//! process of its own, is killed with -9 and started again. Once KRT is back it holds exactly
//! the latest status of every driver, and it received each of them once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::v1::DriverStatusKind;
use integration_tests::deptrans_fakes::Fakes;
use integration_tests::faults::procs::{bin, free_port, Proc};
use integration_tests::private_pg::PrivatePg;
use integration_tests::{kafka, unique};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::deptrans_common::*;

const DRIVERS: usize = 100;
const KRT_DOWN: Duration = Duration::from_secs(60);

fn kind_name(k: DriverStatusKind) -> &'static str {
    match k {
        DriverStatusKind::Online => "online",
        DriverStatusKind::Busy => "busy",
        _ => "offline",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krt_down_a_postgres_restart_and_a_kill_end_with_each_latest_status_sent_once() {
    let seed: u64 = rand::random();
    println!("deptrans faults: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = std::env::temp_dir().join(unique("deptrans-faults"));
    let pg = PrivatePg::start(&dir).expect("private PostgreSQL");
    pg_client(&pg.url("postgres"))
        .await
        .batch_execute("CREATE DATABASE deptrans")
        .await
        .expect("create database");

    let topic = unique("deptrans-faults");
    kafka::create_topic(&topic, 3).await.expect("topic");
    let env = Env {
        fakes: Fakes::start().await.expect("fakes"),
        db_url: pg.url("deptrans"),
        topic,
        group: unique("deptrans-faults"),
    };
    let f = &env.fakes.state;
    let driver = |d: usize| format!("d{d}");
    for d in 0..DRIVERS {
        f.add_driver(
            "p",
            &driver(d),
            &format!("L-{d}"),
            &["econom"],
            MOSCOW.0,
            MOSCOW.1,
        );
    }
    let port = free_port().expect("port");
    let mut cfg = env.config();
    cfg.listen = format!("127.0.0.1:{port}");
    // A row claimed by the killed process is taken again once its lease ends.
    cfg.sender.lease_ms = 5_000;
    let file = dir.join("deptrans.toml");
    std::fs::write(&file, toml::to_string(&cfg).expect("toml")).expect("config");
    let mut svc = Proc::start("deptrans", bin("switchyard-deptrans"), file, &dir).expect("start");
    let ping = format!("http://127.0.0.1:{port}/ping");
    let up = || async {
        eventually("deptrans answers /ping", || async {
            reqwest::get(&ping)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    };
    up().await;

    // Latest status and its time per driver, as produced.
    let mut latest: HashMap<String, (DriverStatusKind, DateTime<Utc>)> = HashMap::new();
    let p = kafka::producer().expect("producer");
    let mut wave = |minute: u32, share: f64, rng: &mut StdRng| {
        let kinds = [
            DriverStatusKind::Online,
            DriverStatusKind::Busy,
            DriverStatusKind::Offline,
        ];
        let picked: Vec<(String, DriverStatusKind)> = (0..DRIVERS)
            .filter_map(|d| {
                let k = kinds[rng.gen_range(0..kinds.len())];
                rng.gen_bool(share).then(|| (driver(d), k))
            })
            .collect();
        for (d, k) in &picked {
            latest.insert(d.clone(), (*k, at(minute)));
        }
        picked
    };
    let send = |picked: Vec<(String, DriverStatusKind)>, minute: u32| {
        let (p, topic) = (p.clone(), env.topic.clone());
        async move {
            for (d, k) in picked {
                produce(&p, &topic, "p", &d, k, at(minute)).await;
            }
        }
    };

    // A status for every driver, sent while everything is up.
    let w = wave(1, 1.0, &mut rng);
    send(w, 1).await;
    eventually("the first status of every driver sent", || async {
        f.pushed().len() == DRIVERS
    })
    .await;

    f.krt_down.store(true, std::sync::atomic::Ordering::SeqCst);
    let down_at = Instant::now();
    let before = f.pushed().len();
    println!("KRT down");
    let w = wave(2, 1.0, &mut rng);
    send(w, 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    pg.restart().expect("PostgreSQL restart");
    println!("PostgreSQL restarted");
    let w = wave(3, 0.5, &mut rng);
    send(w, 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    svc.kill9().expect("kill -9");
    println!("deptrans killed");
    let w = wave(4, 0.5, &mut rng);
    send(w, 4).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    svc.spawn().expect("restart");
    up().await;
    println!("deptrans started again");
    let w = wave(5, 0.3, &mut rng);
    send(w, 5).await;

    tokio::time::sleep(KRT_DOWN.saturating_sub(down_at.elapsed())).await;
    assert_eq!(f.pushed().len(), before, "KRT took nothing while down");
    assert!(
        f.unavailable_answers
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "deptrans kept trying KRT while it was down"
    );
    f.krt_down.store(false, std::sync::atomic::Ordering::SeqCst);
    let up_at = Instant::now();
    println!("KRT up");

    let latest_seen = || {
        let mut seen: HashMap<String, (String, String)> = HashMap::new();
        for x in &f.pushed()[before..] {
            seen.insert(x.driver.clone(), (x.status.clone(), x.timestamp.clone()));
        }
        seen
    };
    let expected: HashMap<String, (String, DateTime<Utc>)> = latest
        .iter()
        .map(|(d, (k, t))| {
            let lic = format!("lic:L-{}", d.trim_start_matches('d'));
            (lic, (kind_name(*k).to_owned(), *t))
        })
        .collect();
    eventually(
        "every driver's latest status sent after the outage",
        || async { latest_seen().len() == DRIVERS },
    )
    .await;
    let drained = up_at.elapsed();
    // Anything sent twice would arrive within a few sender rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let after = &f.pushed()[before..];
    let mut sent: HashMap<&str, usize> = HashMap::new();
    for x in after {
        *sent.entry(x.driver.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    for x in after {
        let (status, time) = &expected[&x.driver];
        let got: DateTime<Utc> = DateTime::parse_from_rfc3339(&x.timestamp)
            .expect("KRT timestamp")
            .into();
        assert_eq!(
            (&x.status, got),
            (status, *time),
            "{} got a status that is not its latest (seed {seed})",
            x.driver
        );
    }
    assert_eq!(
        after.len(),
        DRIVERS,
        "one status per driver after the outage"
    );
    println!(
        "after KRT came back: {DRIVERS} latest statuses sent once each in {} ms",
        drained.as_millis()
    );
    svc.stop(Duration::from_secs(10));
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    for _ in 0..100 {
        if let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("private PostgreSQL does not answer at {url}");
}
