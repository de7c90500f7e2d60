//! `proxy-bench`: the benchmark's local backend and lookups (`serve`) and a closed-loop load
//! generator (`compare`) that drives the backend directly, nginx and the proxy with the same
//! concurrency and prints req/s, p50/p99, the ratios and the proxy's RSS.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The internal caller the load generator authenticates as; deploy/local/bench-proxy.sh
/// configures its sha256.
const BENCH_CALLER_TOKEN: &str = "bench-caller-token-0123456789";

#[derive(Parser)]
#[command(about = "talaria-proxy benchmark helper")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the backend and the identity lookups; writes `backend=` and `lookups=` lines.
    Serve {
        /// File the bound addresses are written to.
        #[arg(long)]
        addr_file: PathBuf,
    },
    /// Print a free TCP port on 127.0.0.1 (for the start script).
    FreePort,
    /// Drive every target and print the comparison.
    Compare {
        /// The backend itself (baseline without any proxy).
        #[arg(long)]
        direct: String,
        /// nginx `proxy_pass` in front of the same backend.
        #[arg(long)]
        nginx: String,
        /// talaria-proxy in front of the same backend.
        #[arg(long)]
        proxy: String,
        /// Pid of the proxy, for its RSS and CPU time.
        #[arg(long)]
        proxy_pid: u32,
        /// Pid of the backend (`serve`), for its CPU time.
        #[arg(long)]
        backend_pid: Option<u32>,
        /// Pid of nginx's master; its workers' CPU time is summed.
        #[arg(long)]
        nginx_pid: Option<u32>,
        /// Connections kept busy at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds measured per target (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Times every target is run (interleaved); the best run per target is reported.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Markdown file the results are written to.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.cmd {
            Cmd::Serve { addr_file } => serve(addr_file).await,
            Cmd::FreePort => {
                println!(
                    "{}",
                    TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port()
                );
                Ok(())
            }
            Cmd::Compare {
                direct,
                nginx,
                proxy,
                proxy_pid,
                backend_pid,
                nginx_pid,
                concurrency,
                seconds,
                rounds,
                out,
            } => {
                let report = compare(
                    &direct,
                    &nginx,
                    &proxy,
                    Pids {
                        proxy: proxy_pid,
                        backend: backend_pid,
                        nginx: nginx_pid,
                    },
                    concurrency,
                    Duration::from_secs(seconds),
                    rounds,
                )
                .await?;
                print!("{report}");
                if let Some(out) = out {
                    if let Some(dir) = out.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&out, &report)
                        .with_context(|| format!("writing {}", out.display()))?;
                }
                Ok(())
            }
        }
    })
}

const RIDE: &[u8] =
    br#"{"ride_id":"r-1","state":"active","battery":87,"lat":55.7512,"lon":37.6184}"#;

async fn serve(addr_file: PathBuf) -> anyhow::Result<()> {
    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let lookups = TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(
        &addr_file,
        format!(
            "backend={}\nlookups={}\n",
            backend.local_addr()?,
            lookups.local_addr()?
        ),
    )?;
    tokio::spawn(accept_loop(backend, |_req| async {
        Full::new(Bytes::from_static(RIDE))
    }));
    accept_loop(lookups, |req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let answer = if path.ends_with("/retrieve") {
            serde_json::json!({"value": format!("+7900{}", v["id"].as_str().unwrap_or_default().len())})
        } else {
            serde_json::json!({"user_id": format!("user-{}", v["phone"].as_str().unwrap_or_default().trim_start_matches('+'))})
        };
        Full::new(Bytes::from(answer.to_string()))
    })
    .await;
    Ok(())
}

async fn accept_loop<F, Fut>(listener: TcpListener, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Full<Bytes>> + Send,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = answer.clone();
                async move {
                    let mut resp = Response::new(answer(req).await);
                    resp.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What one target run measured.
struct Run {
    name: String,
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: u32,
    p99_us: u32,
    /// CPU time of the process in the middle (the backend for the direct run, nginx's
    /// workers, the proxy) per request, in microseconds; `None` when its pid is unknown.
    cpu_us_per_req: Option<f64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// How request headers are chosen for one run.
#[derive(Clone, Copy)]
enum Phone {
    None,
    Warm,
    /// A new phone id per request: every request misses the cache.
    Unique,
}

/// The processes whose CPU time is read around each run.
struct Pids {
    proxy: u32,
    backend: Option<u32>,
    nginx: Option<u32>,
}

impl Pids {
    /// The processes serving a run against the target at `index` of `compare`'s list.
    fn serving(&self, index: usize) -> Vec<u32> {
        match index {
            0 => self.backend.into_iter().collect(),
            1 => self.nginx.map(children_and_self).unwrap_or_default(),
            _ => vec![self.proxy],
        }
    }
}

/// `pid` and its direct children (nginx's workers).
fn children_and_self(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if proc_stat_field(child, 4) == Some(u64::from(pid)) {
            pids.push(child);
        }
    }
    pids
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`.
fn proc_stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// User + system CPU time of `pids`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&p| Some(proc_stat_field(p, 14)? + proc_stat_field(p, 15)?))
        .sum()
}

const TICKS_PER_SECOND: f64 = 100.0;

async fn compare(
    direct: &str,
    nginx: &str,
    proxy: &str,
    pids: Pids,
    concurrency: usize,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<String> {
    let runs = [
        ("backend direct", direct, None, Phone::None),
        ("nginx proxy_pass", nginx, None, Phone::None),
        (
            "proxy, plain (API key only)",
            proxy,
            Some("bench-plain"),
            Phone::None,
        ),
        (
            "proxy, full (identity warm + API key + JWT)",
            proxy,
            Some("bench-full"),
            Phone::Warm,
        ),
        (
            "proxy, full, cache miss every request",
            proxy,
            Some("bench-full"),
            Phone::Unique,
        ),
    ];
    let mut results: Vec<Option<Run>> = runs.iter().map(|_| None).collect();
    for round in 1..=rounds.max(1) {
        for (i, (name, url, tag, phone)) in runs.iter().enumerate() {
            let addr: SocketAddr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()?;
            // Warm-up: connections, pools, the identity cache for the warm id.
            load(addr, *tag, *phone, concurrency, Duration::from_secs(1)).await?;
            let serving = pids.serving(i);
            let cpu_before = cpu_ticks(&serving);
            let mut run = load(addr, *tag, *phone, concurrency, duration).await?;
            run.cpu_us_per_req = cpu_before.zip(cpu_ticks(&serving)).and_then(|(a, b)| {
                (run.requests > 0).then(|| {
                    b.saturating_sub(a) as f64 / TICKS_PER_SECOND * 1e6 / run.requests as f64
                })
            });
            run.name = (*name).to_owned();
            eprintln!(
                "round {round}: {name}: {:.0} req/s p50 {} us p99 {} us errors {} cpu {} us/req",
                run.rps(),
                run.p50_us,
                run.p99_us,
                run.errors,
                run.cpu_us_per_req
                    .map_or("n/a".into(), |c| format!("{c:.1}")),
            );
            if results[i]
                .as_ref()
                .is_none_or(|best| run.rps() > best.rps())
            {
                results[i] = Some(run);
            }
        }
    }
    let results: Vec<Run> = results.into_iter().flatten().collect();
    let rss = proc_status_kb(pids.proxy, "VmRSS:");
    let hwm = proc_status_kb(pids.proxy, "VmHWM:");
    let (direct, nginx, plain, warm) = (&results[0], &results[1], &results[2], &results[3]);
    let mut out = String::new();
    writeln!(out, "# talaria-proxy benchmark\n")?;
    writeln!(
        out,
        "Closed loop, {concurrency} keep-alive connections, {}s per target after 1s warm-up, best of \
         {rounds} interleaved rounds, GET of a \
         {}-byte JSON from one local backend; load generator, backend, nginx and proxy share this \
         machine ({} cores).\n",
        duration.as_secs(),
        RIDE.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "The CPU column is the user + system time of the process in the middle (the backend for \
         the direct run, nginx's workers, the proxy) per request: it does not depend on how the \
         2 cores were shared, so it is the fairer cost comparison on a shared machine.\n"
    )?;
    writeln!(
        out,
        "| target | req/s | p50 ms | p99 ms | errors | CPU us/req |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for r in &results {
        writeln!(
            out,
            "| {} | {:.0} | {:.3} | {:.3} | {} | {} |",
            r.name,
            r.rps(),
            f64::from(r.p50_us) / 1000.0,
            f64::from(r.p99_us) / 1000.0,
            r.errors,
            r.cpu_us_per_req.map_or("n/a".into(), |c| format!("{c:.1}")),
        )?;
    }
    let added = |a: &Run, b: &Run| (f64::from(a.p99_us) - f64::from(b.p99_us)) / 1000.0;
    writeln!(out)?;
    writeln!(
        out,
        "- proxy full (warm) / nginx req/s: **{:.2}x** (target >= 0.8x)",
        warm.rps() / nginx.rps()
    )?;
    writeln!(
        out,
        "- proxy plain / nginx req/s: {:.2}x",
        plain.rps() / nginx.rps()
    )?;
    if let (Some(w), Some(p), Some(n)) = (
        warm.cpu_us_per_req,
        plain.cpu_us_per_req,
        nginx.cpu_us_per_req,
    ) {
        writeln!(
            out,
            "- CPU per request, proxy full (warm) / nginx: **{:.2}x** ({w:.1} vs {n:.1} us); \
             proxy plain / nginx: {:.2}x",
            w / n,
            p / n
        )?;
    }
    writeln!(
        out,
        "- added p99, proxy full (warm) vs nginx: **{:.3} ms**; vs backend direct: {:.3} ms (target < 1 ms)",
        added(warm, nginx),
        added(warm, direct)
    )?;
    writeln!(
        out,
        "- added p99, nginx vs backend direct: {:.3} ms",
        added(nginx, direct)
    )?;
    writeln!(
        out,
        "- proxy RSS after all runs: {} ({} peak)",
        rss.map_or("n/a".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0)),
        hwm.map_or("n/a".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0)),
    )?;
    Ok(out)
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

async fn load(
    addr: SocketAddr,
    tag: Option<&'static str>,
    phone: Phone,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        tasks.spawn(connection(addr, tag, phone, deadline));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (lat, err) = joined?;
        latencies.extend(lat);
        errors += err;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).copied().unwrap_or(0)
    };
    Ok(Run {
        name: String::new(),
        requests: latencies.len() as u64,
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us_per_req: None,
    })
}

/// One keep-alive connection sending requests back to back until `deadline`.
async fn connection(
    addr: SocketAddr,
    tag: Option<&'static str>,
    phone: Phone,
    deadline: Instant,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0u64;
    'reconnect: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let mut req = Request::get("/v1/rides/r-1").header("host", "127.0.0.1");
            if let Some(tag) = tag {
                // The proxy authenticates its internal callers; nginx gets neither header.
                req = req
                    .header("x-api-tag", tag)
                    .header("x-proxy-key", BENCH_CALLER_TOKEN);
            }
            match phone {
                Phone::None => {}
                Phone::Warm => req = req.header("x-yataxi-phoneid", "bench-warm-phone-id"),
                Phone::Unique => {
                    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
                    req = req.header("x-yataxi-phoneid", format!("bench-miss-{n}"));
                }
            }
            let req = req.body(Empty::<Bytes>::new()).expect("static request");
            if sender.ready().await.is_err() {
                errors += 1;
                continue 'reconnect;
            }
            let sent = Instant::now();
            let ok = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body().collect().await.is_ok() && status == StatusCode::OK
                }
                Err(_) => false,
            };
            if ok {
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.push(us);
            } else {
                errors += 1;
                if sender.is_closed() {
                    continue 'reconnect;
                }
            }
        }
    }
    (latencies, errors)
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_status_parses_own_rss() {
        assert!(super::proc_status_kb(std::process::id(), "VmRSS:").unwrap_or(0) > 0);
    }

    #[test]
    fn proc_stat_reads_own_parent_and_cpu() {
        let me = std::process::id();
        // Field 4 is the parent pid; burn a little CPU so utime + stime is not zero.
        assert_eq!(
            super::proc_stat_field(me, 4),
            Some(u64::from(std::os::unix::process::parent_id()))
        );
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(super::cpu_ticks(&[me]).unwrap_or(0) > 0);
        assert!(super::children_and_self(std::os::unix::process::parent_id()).contains(&me));
    }
}
