//! The built-in webhook sink of the local quick start: accepts every POST, logs what arrived.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn receive(headers: HeaderMap, body: Bytes) -> &'static str {
    let token = headers
        .get(crate::http_target::IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(idempotency_token = token, body = %String::from_utf8_lossy(&body), "sink received");
    "ok"
}

pub(crate) fn router() -> Router {
    Router::new()
        .route("/{*path}", post(receive))
        .route("/", post(receive))
}

pub(crate) async fn serve(listener: TcpListener, stop: CancellationToken) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "built-in sink listening");
    axum::serve(listener, router())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
