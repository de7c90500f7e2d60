//! A small closed-loop (fixed concurrency) and open-loop (fixed rate) HTTP load generator for
//! the benchmarks; latencies are recorded per request and summarised as percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Summary of one load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: usize,
    pub ok: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn from(mut lat: Vec<Duration>, failed: usize, elapsed: Duration) -> Self {
        lat.sort_unstable();
        let pct = |p: f64| {
            if lat.is_empty() {
                Duration::ZERO
            } else {
                lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
            }
        };
        Self {
            requests: lat.len() + failed,
            ok: lat.len(),
            failed,
            elapsed,
            p50: pct(0.50),
            p99: pct(0.99),
        }
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
    let client = reqwest::Client::builder()
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
                let ok = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body(i))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
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
    LoadReport::from(all, failed, started.elapsed())
}

/// Sends `rate` requests per second for `duration` regardless of answers (up to `max_in_flight`
/// outstanding); latency is measured from each request's scheduled time, so queueing counts.
pub async fn open_loop(
    url: &str,
    rate: u64,
    duration: Duration,
    max_in_flight: usize,
    headers: Arc<dyn Fn(u64) -> Vec<(&'static str, String)> + Send + Sync>,
    body: BodyFn,
) -> LoadReport {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(max_in_flight)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let sem = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let results = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let started = Instant::now();
    let total = rate * duration.as_secs();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = started + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = sem.clone().acquire_owned().await.unwrap();
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
            let ok = req.send().await.is_ok_and(|r| r.status().is_success());
            let mut r = results.lock().await;
            if ok {
                r.0.push(scheduled.elapsed());
            } else {
                r.1 += 1;
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let (lat, failed) = std::mem::take(&mut *results.lock().await);
    LoadReport::from(lat, failed, elapsed)
}
