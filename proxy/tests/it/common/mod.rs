//! Test harness: the partner backend, `personal` and the partner's user lookup as real HTTP
//! servers on 127.0.0.1:0, the proxy started through `switchyard_proxy::run`, and small clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_proxy::config::{
    ApiKeyConfig, BackendConfig, CallerConfig, IdentityConfig, ProxyConfig, Secret,
};
use switchyard_runtime::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const API_KEY: &str = "partner-api-key-0123456789";
pub(crate) const LOOKUP_KEY: &str = "lookup-api-key-abcdef";
/// The internal caller every harness request authenticates as (`x-proxy-key`).
pub(crate) const CALLER_TOKEN: &str = "test-caller-token-0123456789";

pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// An address nothing listens on.
pub(crate) async fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// The partner API: records every request; `/v1/slow` never answers, `/v1/download?bytes=N`
/// streams N bytes, `/v1/reflect` puts every request header into the response.
#[derive(Clone, Default)]
pub(crate) struct Backend {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub(crate) async fn start() -> (Self, SocketAddr) {
        let backend = Self::default();
        let app = Router::new()
            .fallback(any(backend_handler))
            .with_state(backend.clone());
        (backend, serve(app).await)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen().last().cloned().expect("backend saw no request")
    }
}

async fn backend_handler(State(b): State<Backend>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if parts.uri.path() == "/v1/slow" {
        std::future::pending::<()>().await;
    }
    let mut body_len = 0u64;
    let mut stream = body.into_data_stream();
    let mut checksum = 0u64;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.unwrap();
        checksum = chunk.iter().fold(checksum, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u64::from(*b))
        });
        body_len += chunk.len() as u64;
    }
    b.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts.headers.clone(),
        body_len,
    });
    if parts.uri.path() == "/v1/download" {
        let n: u64 = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .unwrap()
            .parse()
            .unwrap();
        return Response::new(Body::from_stream(pattern_stream(n)));
    }
    if parts.uri.path() == "/v1/reflect" {
        let mut resp = (StatusCode::OK, "reflected").into_response();
        for (k, v) in &parts.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        resp.headers_mut()
            .insert("connection", "x-hop-resp".parse().unwrap());
        resp.headers_mut()
            .insert("x-hop-resp", "1".parse().unwrap());
        resp.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        return resp;
    }
    Json(serde_json::json!({
        "path": path_and_query,
        "body_len": body_len,
        "checksum": checksum,
    }))
    .into_response()
}

/// `n` bytes of a repeating pattern, 64 KiB at a time, never all in memory.
pub(crate) fn pattern_stream(
    n: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let chunk = Bytes::from((0..65_536u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    futures::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(chunk.len() as u64);
            Some((Ok(chunk.slice(..take as usize)), left - take))
        }
    })
}

/// `personal` and the partner's user lookup in one server, with switches to break them.
#[derive(Clone)]
pub(crate) struct Lookups {
    pub personal_calls: Arc<AtomicUsize>,
    pub partner_calls: Arc<AtomicUsize>,
    pub personal_fails: Arc<AtomicBool>,
    pub partner_fails: Arc<AtomicBool>,
    /// Holds personal's answers until permits are added.
    pub gate: Arc<tokio::sync::Semaphore>,
    pub lookup_keys_seen: Arc<Mutex<Vec<String>>>,
}

impl Lookups {
    pub(crate) async fn start() -> (Self, SocketAddr) {
        Self::start_with_gate(tokio::sync::Semaphore::MAX_PERMITS).await
    }

    /// Personal holds its answers until `gate` has permits (add them with `gate.add_permits`).
    pub(crate) async fn start_with_gate(permits: usize) -> (Self, SocketAddr) {
        let lookups = Self {
            personal_calls: Arc::default(),
            partner_calls: Arc::default(),
            personal_fails: Arc::default(),
            partner_fails: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(permits)),
            lookup_keys_seen: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/phones/retrieve", post(personal))
            .route("/v1/users/lookup", post(partner_lookup))
            .with_state(lookups.clone());
        (lookups, serve(app).await)
    }

    pub(crate) fn personal(&self) -> usize {
        self.personal_calls.load(Ordering::SeqCst)
    }

    pub(crate) fn partner(&self) -> usize {
        self.partner_calls.load(Ordering::SeqCst)
    }
}

/// The phone number personal knows for `id`; tests check it never leaves the proxy.
pub(crate) fn phone_of(id: &str) -> String {
    format!("+7900{}", id.len() * 1111)
}

pub(crate) fn user_of(id: &str) -> String {
    format!("user-{}", phone_of(id).trim_start_matches('+'))
}

async fn personal(State(l): State<Lookups>, Json(body): Json<serde_json::Value>) -> Response {
    l.personal_calls.fetch_add(1, Ordering::SeqCst);
    l.gate.acquire().await.unwrap().forget();
    if l.personal_fails.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let id = body["id"].as_str().unwrap_or_default();
    if id.starts_with("unknown") {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(serde_json::json!({"id": id, "value": phone_of(id)})).into_response()
}

async fn partner_lookup(
    State(l): State<Lookups>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    l.partner_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        l.lookup_keys_seen.lock().unwrap().push(k.to_owned());
    }
    if l.partner_fails.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let phone = body["phone"].as_str().unwrap_or_default();
    Json(serde_json::json!({"user_id": format!("user-{}", phone.trim_start_matches('+'))}))
        .into_response()
}

/// A backend config with the usual prefixes and the partner API key.
pub(crate) fn backend_config(addr: SocketAddr) -> BackendConfig {
    BackendConfig {
        base_url: format!("http://{addr}"),
        timeout_ms: 2_000,
        allowed_prefixes: vec!["/v1".into(), "/api/rides/".into()],
        max_body_bytes: None,
        identity: None,
        api_key: Some(ApiKeyConfig {
            header: "x-api-key".into(),
            value: Some(Secret::new(API_KEY)),
            file: None,
        }),
        jwt: None,
        callback: None,
    }
}

pub(crate) fn identity_config(lookups: SocketAddr) -> IdentityConfig {
    IdentityConfig {
        personal_url: format!("http://{lookups}/v1/phones/retrieve"),
        partner_url: format!("http://{lookups}/v1/users/lookup"),
        partner_api_key: Some(ApiKeyConfig {
            header: "x-api-key".into(),
            value: Some(Secret::new(LOOKUP_KEY)),
            file: None,
        }),
        phone_id_header: "x-yataxi-phoneid".into(),
        user_id_header: "x-partner-user-id".into(),
        cache_capacity: 1_000,
        cache_ttl_ms: 600_000,
        timeout_ms: 2_000,
    }
}

/// A caller with `token` that may use `backends`.
pub(crate) fn caller(token: &str, backends: &[&str]) -> CallerConfig {
    CallerConfig {
        token_sha256: Some(switchyard_proxy::sha256_hex(token)),
        token_file: None,
        backends: backends.iter().map(|b| (*b).to_owned()).collect(),
    }
}

/// The proxy config over `backends`, with the harness caller (`CALLER_TOKEN`) allowed on all.
pub(crate) fn proxy_config(backends: BTreeMap<String, BackendConfig>) -> ProxyConfig {
    let tags: Vec<&str> = backends.keys().map(String::as_str).collect();
    let callers = BTreeMap::from([("test".to_owned(), caller(CALLER_TOKEN, &tags))]);
    ProxyConfig {
        callers,
        backends,
        ..ProxyConfig::default()
    }
}

/// A running proxy; dropped tests just leave it to the runtime.
pub(crate) struct Proxy {
    /// Internal forwarding (`x-api-tag`).
    pub addr: SocketAddr,
    /// Partner callbacks.
    pub partner_addr: SocketAddr,
    /// `/_proxy/ping` and `/_proxy/metrics`.
    pub ops_addr: SocketAddr,
    pub shutdown: Shutdown,
}

pub(crate) async fn start_proxy(config: ProxyConfig) -> Proxy {
    switchyard_runtime::telemetry::init_tracing("proxy-test");
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners = switchyard_proxy::Listeners {
        internal: bind().await,
        partner: bind().await,
        ops: bind().await,
    };
    let addr = listeners.internal.local_addr().unwrap();
    let partner_addr = listeners.partner.local_addr().unwrap();
    let ops_addr = listeners.ops.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let state = switchyard_proxy::ProxyState::new(&config).expect("valid config");
    let s = shutdown.clone();
    tokio::spawn(async move { switchyard_proxy::serve(state, &config, listeners, s).await });
    Proxy {
        addr,
        partner_addr,
        ops_addr,
        shutdown,
    }
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the proxy's own error shape and returns the code.
    pub(crate) fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["message"].is_string(), "no message in {v}");
        v["code"].as_str().expect("code").to_owned()
    }
}

pub(crate) type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub(crate) fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` to the proxy and reads the whole answer.
pub(crate) async fn send(client: &TestClient, req: http::Request<Body>) -> Answer {
    let resp = client.request(req).await.expect("proxy answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends `req` and asserts the proxy refused it with its own error shape, `status` and `code`.
pub(crate) async fn send_refused(
    client: &TestClient,
    req: http::Request<Body>,
    status: u16,
    code: &str,
) -> Answer {
    let target = format!("{} tag {:?}", req.uri(), req.headers().get("x-api-tag"));
    let a = send(client, req).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (status, code),
        "{target}"
    );
    a
}

/// A GET to the proxy at `path` with `x-api-tag: tag` (if any), extra headers, and the
/// harness caller's `x-proxy-key`.
pub(crate) fn get(
    proxy: SocketAddr,
    path: &str,
    tag: Option<&str>,
    headers: &[(&str, &str)],
) -> http::Request<Body> {
    let mut b =
        http::Request::get(format!("http://{proxy}{path}")).header("x-proxy-key", CALLER_TOKEN);
    if let Some(tag) = tag {
        b = b.header("x-api-tag", tag);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

/// Writes raw bytes to the proxy and reads until it closes the connection.
pub(crate) async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // The proxy closes after refusing; a reset after the answer is fine too.
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of a metric line such as `name_total{labels} 3`, or 0 when absent; `ops` is the
/// proxy's ops listener.
pub(crate) async fn metric(client: &TestClient, ops: SocketAddr, line_prefix: &str) -> f64 {
    let answer = send(client, get(ops, "/_proxy/metrics", None, &[])).await;
    assert_eq!(answer.status, 200, "metrics not served");
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
