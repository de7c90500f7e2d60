//! A recording subscriber: a real HTTP server that logs every request (event id, idempotency
//! token, status it answered, arrival time) and can be told to fail, stall, throttle with
//! `Retry-After`, or go down (its port closed) for a while.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::checker::Delivery;

/// The header the dispatcher puts the idempotency token in.
pub const TOKEN_HEADER: &str = "x-idempotency-token";

/// How the subscriber answers now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200.
    Ok,
    /// `status` without `Retry-After`.
    Fail(u16),
    /// Records the delivery, then waits this long before answering 200 (the dispatcher may
    /// have given up by then).
    Stall(Duration),
    /// `status` (429 or 503) with `Retry-After: retry_after_s`.
    Throttle { status: u16, retry_after_s: u64 },
    /// The port is closed: connections are refused.
    Down,
}

struct Shared {
    name: String,
    mode: Mutex<Mode>,
    log: Mutex<Vec<Delivery>>,
}

/// A running recording subscriber; clones share the server.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Arc<Mutex<Option<CancellationToken>>>,
}

impl Recorder {
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let rec = Self {
            addr: listener.local_addr()?,
            shared: Arc::new(Shared {
                name: name.to_owned(),
                mode: Mutex::new(Mode::Ok),
                log: Mutex::default(),
            }),
            serving: Arc::default(),
        };
        rec.serve(listener);
        Ok(rec)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(self.shared.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "recording subscriber stopped");
            }
        });
    }

    /// Switches the answers; `Mode::Down` closes the port and any other mode opens it again
    /// on the same address.
    pub async fn set_mode(&self, mode: Mode) -> anyhow::Result<()> {
        let was = std::mem::replace(
            &mut *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()),
            mode.clone(),
        );
        if mode == Mode::Down && was != Mode::Down {
            if let Some(stop) = self
                .serving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                stop.cancel();
            }
        } else if mode != Mode::Down && was == Mode::Down {
            // The old server lets go of the port once its last connection closed.
            let deadline = Instant::now() + Duration::from_secs(30);
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(error = %e, "port not free yet");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            self.serve(listener);
        }
        Ok(())
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Delivery> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let mode = shared
        .mode
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (status, retry_after) = match mode {
        Mode::Ok | Mode::Stall(_) => (200, None),
        Mode::Fail(s) => (s, None),
        Mode::Throttle {
            status,
            retry_after_s,
        } => (status, Some(retry_after_s)),
        // A request on a connection opened before the port closed.
        Mode::Down => (503, None),
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    // Signed deliveries name the event in `webhook-id`; JSON bodies also carry `event_id`.
    let event_id = header("webhook-id").map(str::to_owned).or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["event_id"].as_str().map(str::to_owned))
    });
    shared
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Delivery {
            sink: shared.name.clone(),
            event_id: event_id.unwrap_or_default(),
            token: header(TOKEN_HEADER).map(str::to_owned),
            status,
            at: Some(at),
        });
    if let Mode::Stall(d) = mode {
        // The event is processed (recorded) at once; only the answer is late, so a caller
        // that gives up first has it delivered anyway (hyper drops this future on hang-up).
        tokio::time::sleep(d).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match retry_after {
        Some(s) => (code, [("retry-after", s.to_string())], "scripted").into_response(),
        None => (code, "scripted").into_response(),
    }
}
