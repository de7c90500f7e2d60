//! A small closed-loop (fixed concurrency) and open-loop (fixed rate) HTTP load generator for
//! the benchmarks; latencies are recorded per request and summarised as percentiles.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Summary of one load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: usize,
    pub ok: usize,
    pub failed: usize,
    /// From the start of the run to the last answer.
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Open loop only: the offered rate, requests/s.
    pub offered: Option<u64>,
    /// Open loop only: the largest delay from a request's scheduled time to its hand-off to the
    /// client (the generator falling behind, or `max_in_flight` reached). Latencies include it;
    /// a large value says the generator, not only the server, could not keep the rate.
    pub send_lag_max: Duration,
    /// Open loop: request `i` was due at `scheduled(started, i, rate)`.
    pub started: Instant,
}

/// p50, p99 and max of `lat` (sorted in place); zero when empty.
pub fn percentiles(lat: &mut [Duration]) -> (Duration, Duration, Duration) {
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or_default(),
    )
}

/// When the open loop's request `i` is due.
pub fn scheduled(started: Instant, i: u64, rate: u64) -> Instant {
    started + Duration::from_nanos(i * 1_000_000_000 / rate.max(1))
}

impl LoadReport {
    /// Answered 2xx per second over the whole run, the tail of answers included.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn from(mut lat: Vec<Duration>, failed: usize, started: Instant) -> Self {
        let (p50, p99, max) = percentiles(&mut lat);
        Self {
            requests: lat.len() + failed,
            ok: lat.len(),
            failed,
            elapsed: started.elapsed(),
            p50,
            p99,
            max,
            offered: None,
            send_lag_max: Duration::ZERO,
            started,
        }
    }
}

/// Sends `req`; true on a 2xx. The answer is read to the end so the connection goes back to
/// the pool (an unread body would make the next request open a new connection).
async fn post_ok(req: reqwest::RequestBuilder) -> bool {
    match req.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            r.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

/// `body(i)` makes the i-th request body.
pub type BodyFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// `concurrency` workers POST back to back for `duration`.
pub async fn closed_loop(
    url: &str,
    concurrency: usize,
    duration: Duration,
    body: BodyFn,
) -> LoadReport {
    // The benchmarks load the harness's ingress: present its caller's credential.
    let client = reqwest::Client::builder()
        .default_headers(crate::ingress_auth_headers())
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            let mut i = w as u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = post_ok(
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body(i)),
                )
                .await;
                if ok {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
                i += concurrency as u64;
            }
            (lat, failed)
        });
    }
    let mut all = Vec::new();
    let mut failed = 0;
    while let Some(Ok((lat, f))) = tasks.join_next().await {
        all.extend(lat);
        failed += f;
    }
    LoadReport::from(all, failed, started)
}

/// Extra headers of request `i`.
pub type HeadersFn = Arc<dyn Fn(u64) -> Vec<(&'static str, String)> + Send + Sync>;

/// Sends `rate` requests per second for `duration` regardless of answers (up to `max_in_flight`
/// outstanding). Latency is measured from each request's SCHEDULED time, not from when it was
/// actually sent, so time spent waiting behind a slow server counts (no coordinated omission).
/// The timer has millisecond resolution: requests due within one millisecond leave together.
pub async fn open_loop(
    url: &str,
    rate: u64,
    duration: Duration,
    max_in_flight: usize,
    headers: HeadersFn,
    body: BodyFn,
) -> LoadReport {
    // The benchmarks load the harness's ingress: present its caller's credential.
    let client = reqwest::Client::builder()
        .default_headers(crate::ingress_auth_headers())
        .pool_max_idle_per_host(max_in_flight)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let sem = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let total = rate * duration.as_secs();
    let results = Arc::new(Mutex::new((Vec::with_capacity(total as usize), 0usize)));
    let mut send_lag_max = Duration::ZERO;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = scheduled(started, i, rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = sem.clone().acquire_owned().await.unwrap();
        send_lag_max = send_lag_max.max(due.elapsed());
        let (client, url, results, body, headers) = (
            client.clone(),
            url.to_owned(),
            results.clone(),
            body.clone(),
            headers.clone(),
        );
        tasks.spawn(async move {
            let mut req = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body(i));
            for (k, v) in headers(i) {
                req = req.header(k, v);
            }
            let ok = post_ok(req).await;
            let latency = due.elapsed();
            drop(permit);
            let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                r.0.push(latency);
            } else {
                r.1 += 1;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let (lat, failed) = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    LoadReport {
        offered: Some(rate),
        send_lag_max,
        ..LoadReport::from(lat, failed, started)
    }
}
