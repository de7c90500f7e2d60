//! End to end: uid-notify POST to the subscriber's receipt, from each event's scheduled send.

use super::*;

/// portal_uid of the e2e run's event `i` is `E2E_UID + i`; warm-up events start at `WARM_UID`.
const E2E_UID: u64 = 1;
const WARM_UID: u64 = 1 << 40;

/// What the e2e subscriber received: the first arrival of each measured event, by index.
#[derive(Default)]
struct Arrivals {
    first: Vec<Option<Instant>>,
    distinct: usize,
    total: u64,
    warm: u64,
}

/// End to end: `POST /v1/uid-notify` at a fixed offered rate through an in-process ingress and
/// dispatcher to a subscriber that answers 200 at once; each event's latency runs from its
/// scheduled send time to the subscriber's receipt of it (matched by portal_uid).
pub(super) async fn e2e(
    out: &mut String,
    rate: u64,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Webhook {
        portal_uid: u64,
    }
    let topic = unique("bench-e2e");
    create_topic(&topic, 6).await?;
    let total = rate * seconds;
    let arrivals = Arc::new(Mutex::new(Arrivals {
        first: vec![None; total as usize],
        ..Default::default()
    }));
    let sink = {
        let arrivals = arrivals.clone();
        let app = Router::new().route(
            "/e2e",
            post(move |body: axum::body::Bytes| {
                let at = Instant::now();
                let uid = serde_json::from_slice::<Webhook>(&body).map_or(0, |w| w.portal_uid);
                let mut guard = arrivals.lock().unwrap();
                let a = &mut *guard;
                a.total += 1;
                if uid >= WARM_UID {
                    a.warm += 1;
                } else if let Some(slot) = uid
                    .checked_sub(E2E_UID)
                    .and_then(|i| a.first.get_mut(i as usize))
                {
                    if slot.is_none() {
                        *slot = Some(at); // a duplicate arrives later: the first one counts
                        a.distinct += 1;
                    }
                }
                async { "" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/e2e")
    };
    let ingress = start_ingress(ingress_config(&topic), None).await?;
    let mut sub = http_subscriber("e2e", &topic, &sink);
    sub.concurrency = concurrency;
    let d = start_dispatcher(dispatcher_config(vec![sub])).await?;
    let url = ingress.url("/v1/uid-notify");
    let no_headers: integration_tests::load::HeadersFn = Arc::new(|_| Vec::new());

    // Warm-up, not measured: the dispatcher has joined its group and every client is connected
    // before the clock starts.
    let w = open_loop(
        &url,
        50,
        Duration::from_secs(1),
        100,
        no_headers.clone(),
        uid_body(WARM_UID),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (arrivals.lock().unwrap().warm as usize) < w.ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(
        w.ok > 0 && arrivals.lock().unwrap().warm as usize >= w.ok,
        "warm-up: {} of {} events accepted, fewer delivered within 60 s",
        w.ok,
        w.requests
    );

    let r = open_loop(
        &url,
        rate,
        Duration::from_secs(seconds),
        2_000,
        no_headers,
        uid_body(E2E_UID),
    )
    .await;
    // Drain: until every accepted event arrived, or nothing new arrived for 15 s.
    let mut progress = (0, Instant::now());
    loop {
        let n = arrivals.lock().unwrap().distinct;
        if n >= r.ok || progress.1.elapsed() > Duration::from_secs(15) {
            break;
        }
        if n != progress.0 {
            progress = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await?;
    ingress.stop().await?;

    let a = std::mem::take(&mut *arrivals.lock().unwrap());
    let mut lat: Vec<Duration> = (0..total)
        .zip(&a.first)
        .filter_map(|(i, at)| {
            Some(
                at.as_ref()?
                    .saturating_duration_since(scheduled(r.started, i, rate)),
            )
        })
        .collect();
    let last = a.first.iter().flatten().max().copied().unwrap_or(r.started);
    let delivered_rate = a.distinct as f64 / (last - r.started).as_secs_f64().max(1e-9);
    let (p50, p99, max) = percentiles(&mut lat);
    let _ = writeln!(
        out,
        "### End to end: POST /v1/uid-notify -> subscriber's HTTP receipt, open loop at {rate} req/s for {seconds} s, 6 partitions, subscriber concurrency {concurrency}\n"
    );
    out.push_str(OPEN_HEAD);
    out.push_str(&open_row("POST /v1/uid-notify (2xx after broker ack)", &r));
    let _ = writeln!(
        out,
        "\n| scheduled send -> | rate/s | p50 | p99 | max |\n|---|---|---|---|---|\n| ingress answer (2xx) | {:.0} | {} | {} | {} |\n| subscriber's HTTP receipt | {delivered_rate:.0} | {} | {} | {} |",
        r.rate(),
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        ms(p50),
        ms(p99),
        ms(max)
    );
    let _ = writeln!(
        out,
        "\n| sent | accepted (2xx) | failed | delivered (distinct) | missing (accepted, not delivered) | duplicates |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |",
        r.requests,
        r.ok,
        r.failed,
        a.distinct,
        r.ok.saturating_sub(a.distinct),
        a.total - a.warm - a.distinct as u64
    );
    let _ = writeln!(
        out,
        "\nend-to-end p99 **{}** (target < 25 ms at 1k/s); delivered {delivered_rate:.0}/s of {rate}/s offered",
        ms(p99)
    );
    Ok(())
}
