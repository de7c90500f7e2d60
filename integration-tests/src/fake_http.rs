//! A real HTTP server that plays a subscriber: records every request and answers according
//! to a script (fail the first N, always fail, honour Retry-After...).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

/// One request as the subscriber saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the fake answers.
#[derive(Debug, Clone)]
pub enum Script {
    /// 200 always.
    Ok,
    /// `status` for the first `n` requests, 200 afterwards.
    FailFirst {
        n: usize,
        status: u16,
        retry_after: Option<u64>,
    },
    /// `status` forever.
    AlwaysFail { status: u16 },
    /// `status` for about `percent` of requests, at random; 200 for the rest.
    FailRandomly { percent: u32, status: u16 },
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeSubscriber {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    inner: Arc<Mutex<Inner>>,
    /// How long each answer takes.
    delay: Arc<Mutex<Duration>>,
    /// Requests being answered now, and the most there ever were at once.
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl FakeSubscriber {
    pub async fn start(script: Script) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let fake = Self {
            addr,
            script: Arc::new(Mutex::new(script)),
            inner: Arc::default(),
            delay: Arc::default(),
            active: Arc::default(),
            peak: Arc::default(),
        };
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(fake)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_script(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    /// Every answer waits `delay` first (a slow subscriber).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The most requests this subscriber was answering at once.
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status < 300)
            .collect()
    }

    /// Waits until `pred` holds over the received requests, or `within` passes.
    pub async fn wait_until(&self, within: Duration, pred: impl Fn(&[Received]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if pred(&self.received()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_delivered(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |r| r.iter().filter(|r| r.status < 300).count() >= n)
            .await
    }
}

/// One request being answered; counted until its handler ends or is dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(fake): State<FakeSubscriber>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let now = fake.active.fetch_add(1, Ordering::SeqCst) + 1;
    let _active = Active(fake.active.clone());
    fake.peak.fetch_max(now, Ordering::SeqCst);
    let (status, retry_after) = {
        let mut inner = fake.inner.lock().unwrap();
        let seen = inner.received.len();
        let (status, retry_after) = match fake.script.lock().unwrap().clone() {
            Script::Ok => (200, None),
            Script::FailFirst {
                n,
                status,
                retry_after,
            } if seen < n => (status, retry_after),
            Script::FailFirst { .. } => (200, None),
            Script::AlwaysFail { status } => (status, None),
            Script::FailRandomly { percent, status } => {
                if rand::Rng::gen_range(&mut rand::thread_rng(), 0..100) < percent {
                    (status, None)
                } else {
                    (200, None)
                }
            }
        };
        inner.received.push(Received {
            headers,
            body,
            status,
            at,
        });
        (status, retry_after)
    };
    let delay = *fake.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match retry_after {
        Some(s) => (code, [("retry-after", s.to_string())], "scripted").into_response(),
        None => (code, "scripted").into_response(),
    }
}
