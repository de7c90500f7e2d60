//! Serving a router with the deadlines `axum::serve` leaves out: [`serve`] gives a client
//! [`ConnDeadlines::header_read`] from a request's first byte to its complete head and closes a
//! connection idle for [`ConnDeadlines::idle`] (see [`super::conn`]), and the [`deadline`]
//! layer gives it [`RequestDeadline::within`] for the body and the answer (408 while the body
//! is still arriving, 503 once the handler runs). A client trickling a byte a second so holds
//! a connection for those seconds, never longer. Services put [`deadline`] inside their
//! authentication layer, so no body is read for a caller already refused.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Extensions;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use std::sync::Arc;

use super::ErrorBody;
use crate::conn::{ConnDeadlines, ConnState, DeadlineIo};

/// The state of the [`deadline`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline {
    /// From the end of the head to the answer: the body's arrival and the handler's work.
    pub within: Duration,
    /// The largest body any route takes; a larger one is refused (400) before a handler runs.
    pub max_body: usize,
}

impl RequestDeadline {
    /// For internal APIs (admin, deptrans): 10 s, and axum's default body limit of 2 MiB.
    pub const INTERNAL: Self = Self {
        within: Duration::from_secs(10),
        max_body: 2 * 1024 * 1024,
    };

    /// This deadline as a layer of `router`.
    pub fn layer(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self, deadline))
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the requests in
/// flight (idle keep-alive connections are closed at once). HTTP/1.1 and h2c, as
/// `axum::serve`, with the connection deadlines of `conn`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    conn: ConnDeadlines,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, app, conn, None, shutdown).await;
}

/// [`serve`] as the supervised task `http` of `tasks`, until `shutdown` is triggered: how a
/// service with one plain-HTTP API (dispatcher, deptrans) serves it.
pub fn serve_task<E: Send + 'static>(
    tasks: &mut crate::shutdown::Tasks<E>,
    listener: TcpListener,
    app: Router,
    shutdown: &crate::Shutdown,
) {
    let stop = shutdown.triggered();
    tasks.spawn("http", async move {
        serve(listener, app, ConnDeadlines::DEFAULT, stop).await;
        Ok(())
    });
}

/// TLS for [`serve_with`] (feature `tls`); without the feature there is none to give.
#[cfg(feature = "tls")]
pub type Tls = super::tls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
pub type Tls = std::convert::Infallible;

/// [`serve`], over TLS when `tls` is given: the handshake runs on the connection's own task
/// within [`ConnDeadlines::header_read`], and a verified client certificate reaches the
/// handlers as a `tls::ClientCert` extension.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    conn: ConnDeadlines,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let app = app.clone();
        // Without the feature `Tls` is `Infallible`, which is `Copy`.
        #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
        let tls = tls.clone();
        crate::shutdown::spawn_detached("http-connection", async move {
            match tls {
                None => serve_conn(stream, Extensions::default(), app, conn, watcher).await,
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    let shake = tokio::time::timeout(conn.header_read, acceptor.accept(stream));
                    let stream = match shake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake past the header-read deadline");
                            return;
                        }
                    };
                    let mut ext = Extensions::default();
                    let peer = stream.get_ref().1.peer_certificates();
                    if let Some(leaf) = peer.and_then(<[_]>::first) {
                        if let Some(cert) = super::tls::ClientCert::from_der(leaf) {
                            ext.insert(cert);
                        }
                    }
                    serve_conn(stream, ext, app, conn, watcher).await;
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection: `ext` (what the handshake learnt) is put on each of its requests.
async fn serve_conn<S>(
    stream: S,
    ext: Extensions,
    app: Router,
    conn: ConnDeadlines,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = ConnState::new(conn);
    let tracker = Tracker::new(state.clone());
    let service = TowerToHyperService::new(tower::service_fn(
        move |req: hyper::Request<hyper::body::Incoming>| {
            let (tracker, app) = (tracker.clone(), app.clone());
            let mut req = req.map(Body::new);
            req.extensions_mut().extend(ext.clone());
            async move { Ok::<_, std::convert::Infallible>(tracker.call(app, req).await) }
        },
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer also runs while a kept-alive connection waits (and then
    // closes it under a client reusing it); DeadlineIo keeps the two waits apart.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    let io = TokioIo::new(DeadlineIo::new(stream, state));
    let conn = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The request deadline: the body is read within it (408 `request_timeout` if it has not all
/// arrived, 400 `body_too_large` past `max_body`, as the handlers' own smaller limits), then the handler gets what is left (503
/// `request_timeout` after that: the caller retries, as after any 503).
pub async fn deadline(
    State(deadline): State<RequestDeadline>,
    req: Request,
    next: Next,
) -> Response {
    let until = tokio::time::Instant::now() + deadline.within;
    let (parts, body) = req.into_parts();
    let bytes =
        match tokio::time::timeout_at(until, axum::body::to_bytes(body, deadline.max_body)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) if is_length_limit(&e) => {
                return ErrorBody::new(
                    "body_too_large",
                    format!("request body exceeds {} bytes", deadline.max_body),
                )
                .into_response_with(StatusCode::BAD_REQUEST)
            }
            Ok(Err(e)) => {
                return ErrorBody::new("unreadable_body", format!("reading the body failed: {e}"))
                    .into_response_with(StatusCode::BAD_REQUEST)
            }
            Err(_) => {
                return ErrorBody::new(
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} ms",
                        deadline.within.as_millis()
                    ),
                )
                .into_response_with(StatusCode::REQUEST_TIMEOUT)
            }
        };
    let req = Request::from_parts(parts, Body::from(bytes));
    match tokio::time::timeout_at(until, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            axum::Json(ErrorBody::new(
                "request_timeout",
                format!("no answer within {} ms; retry", deadline.within.as_millis()),
            )),
        )
            .into_response(),
    }
}

/// Whether reading a body failed on `axum::body::to_bytes`'s limit (not on the connection).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Marks a connection's requests in flight, from the call until the response body is dropped.
#[derive(Debug, Clone)]
struct Tracker {
    state: Arc<ConnState>,
}

impl Tracker {
    fn new(state: Arc<ConnState>) -> Self {
        Self { state }
    }

    /// Runs `app` on `req` with the request counted in flight until its body is done.
    async fn call(self, app: axum::Router, req: Request) -> Response {
        let in_flight = self.state.begin();
        let resp = tower::ServiceExt::oneshot(app, req)
            .await
            .unwrap_or_else(|never| match never {});
        resp.map(|body| Body::new(in_flight.hold(body)))
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    fn app(handler_ms: u64) -> Router {
        let app = Router::new().route(
            "/",
            post(move |body: String| async move {
                tokio::time::sleep(Duration::from_millis(handler_ms)).await;
                body
            }),
        );
        RequestDeadline {
            within: Duration::from_millis(100),
            max_body: 16,
        }
        .layer(app)
    }

    async fn call(app: Router, body: &'static str) -> (StatusCode, String) {
        let req = Request::post("/").body(Body::from(body)).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_body_within_limits_reaches_the_handler_whole() {
        assert_eq!(
            call(app(0), "0123456789").await,
            (StatusCode::OK, "0123456789".into())
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_400_body_too_large() {
        let (status, body) = call(app(0), "01234567890123456789").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains(r#""code":"body_too_large""#), "{body}");
    }

    #[tokio::test]
    async fn a_handler_past_the_deadline_is_a_503_with_retry_after() {
        let req = Request::post("/").body(Body::from("x")).unwrap();
        let resp = app(500).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("request_timeout"));
    }
}
