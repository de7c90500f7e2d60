//! Real HTTP servers playing deptrans' neighbours: KRT, driver-profiles, personal,
//! driver-categories and driver-trackstory. Each listens on its own 127.0.0.1:0 port and
//! records what it was asked, so tests assert outcomes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One status push KRT received and accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// `id:<deptrans_id>` or `lic:<licence>`.
    pub driver: String,
    pub status: String,
    pub timestamp: String,
}

/// Shared state of all fakes; flip the flags to take a service down.
#[derive(Default)]
pub struct FakeState {
    pub krt_down: AtomicBool,
    pub profiles_down: AtomicBool,
    pub categories_down: AtomicBool,
    pub personal_down: AtomicBool,
    pub trackstory_down: AtomicBool,
    /// Lifetime of issued tokens.
    pub token_ttl_secs: AtomicU64,
    /// Delay of every KRT status push (benchmarks).
    pub push_delay_ms: AtomicU64,
    pub tokens_issued: AtomicU64,
    /// Bulk status requests received.
    pub push_calls: AtomicU64,
    /// Per-driver status requests received (`krt.mode = "single"`).
    pub single_calls: AtomicU64,
    pub unavailable_answers: AtomicU64,
    pub unauthorized_answers: AtomicU64,
    valid_tokens: Mutex<HashSet<String>>,
    pub pushed: Mutex<Vec<Pushed>>,
    /// deptrans id -> licence, as KRT knows them.
    pub krt_ids: Mutex<HashMap<String, String>>,
    /// Change log of profiles: (park, driver, licence pd id).
    pub profiles: Mutex<Vec<(String, String, Option<String>)>>,
    /// Change log of categories.
    pub categories: Mutex<Vec<(String, String, Vec<String>)>>,
    /// pd id -> licence.
    pub licences: Mutex<HashMap<String, String>>,
    /// (park, driver) -> (lat, lon).
    pub positions: Mutex<HashMap<(String, String), (f64, f64)>>,
    /// The `traceparent` of every status push, in arrival order (`None`: the push had none).
    pub push_traceparents: Mutex<Vec<Option<String>>>,
    /// While held, status pushes wait (lets a test change rows mid-push).
    pub push_gate: tokio::sync::RwLock<()>,
    /// Drivers (`id:<deptrans_id>` or `lic:<licence>`) KRT refuses: a bulk request holding one
    /// gets a 400 whose body names (echoes) the item, and nothing of it is taken.
    pub refused: Mutex<HashSet<String>>,
    /// Drivers KRT answers `rejected` for, row by row, taking the rest of the request.
    pub rejected: Mutex<HashSet<String>>,
}

impl FakeState {
    /// Adds a driver everywhere: profile with licence, categories, position.
    pub fn add_driver(
        &self,
        park: &str,
        driver: &str,
        licence: &str,
        cats: &[&str],
        lat: f64,
        lon: f64,
    ) {
        let pd = format!("pd-{park}-{driver}");
        lock(&self.profiles).push((park.into(), driver.into(), Some(pd.clone())));
        lock(&self.categories).push((
            park.into(),
            driver.into(),
            cats.iter().map(|c| (*c).to_owned()).collect(),
        ));
        lock(&self.licences).insert(pd, licence.into());
        lock(&self.positions).insert((park.into(), driver.into()), (lat, lon));
    }

    /// Makes every issued token invalid: the next call with it gets 401.
    pub fn revoke_tokens(&self) {
        lock(&self.valid_tokens).clear();
    }

    /// KRT refuses every request holding `driver` (`lic:<licence>` or `id:<deptrans_id>`).
    pub fn refuse(&self, driver: &str) {
        lock(&self.refused).insert(driver.to_owned());
    }

    /// KRT takes requests holding `driver` again.
    pub fn unrefuse(&self, driver: &str) {
        lock(&self.refused).remove(driver);
    }

    /// KRT answers `rejected` for `driver`'s rows.
    pub fn reject(&self, driver: &str) {
        lock(&self.rejected).insert(driver.to_owned());
    }

    pub fn pushed(&self) -> Vec<Pushed> {
        lock(&self.pushed).clone()
    }

    pub fn push_traceparents(&self) -> Vec<Option<String>> {
        lock(&self.push_traceparents).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Base URLs of the running fakes.
pub struct Fakes {
    pub state: Arc<FakeState>,
    pub krt: String,
    pub profiles: String,
    pub personal: String,
    pub categories: String,
    pub trackstory: String,
}

async fn serve(router: Router, port: u16) -> anyhow::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr: SocketAddr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

impl Fakes {
    /// Every fake on its own ephemeral port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on([0; 5]).await
    }

    /// Fakes on fixed ports: KRT, profiles, personal, categories, trackstory.
    pub async fn start_on(ports: [u16; 5]) -> anyhow::Result<Self> {
        let state = Arc::new(FakeState {
            token_ttl_secs: AtomicU64::new(3600),
            ..FakeState::default()
        });
        let krt = serve(
            Router::new()
                .route("/auth/token", post(krt_auth))
                .route("/v1/statuses", post(krt_statuses))
                .route("/v1/drivers/status", post(krt_single))
                .route("/v1/drivers/check", post(krt_check))
                .with_state(state.clone()),
            ports[0],
        )
        .await?;
        let profiles = serve(
            Router::new()
                .route("/v1/profiles/updates", get(profiles_updates))
                .with_state(state.clone()),
            ports[1],
        )
        .await?;
        let personal = serve(
            Router::new()
                .route("/v1/driver_licenses/bulk_retrieve", post(personal_retrieve))
                .with_state(state.clone()),
            ports[2],
        )
        .await?;
        let categories = serve(
            Router::new()
                .route("/v1/categories/updates", get(categories_updates))
                .with_state(state.clone()),
            ports[3],
        )
        .await?;
        let trackstory = serve(
            Router::new()
                .route("/v1/positions", post(positions))
                .with_state(state.clone()),
            ports[4],
        )
        .await?;
        Ok(Self {
            state,
            krt,
            profiles,
            personal,
            categories,
            trackstory,
        })
    }
}

fn unavailable(state: &FakeState) -> Response {
    state.unavailable_answers.fetch_add(1, Ordering::Relaxed);
    (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
}

async fn krt_auth(State(s): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    if s.krt_down.load(Ordering::Relaxed) {
        return unavailable(&s);
    }
    if body["client_secret"] != "secret" {
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let n = s.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("token-{n}-{}", uuid::Uuid::now_v7());
    lock(&s.valid_tokens).insert(token.clone());
    Json(json!({"access_token": token, "expires_in": s.token_ttl_secs.load(Ordering::Relaxed)}))
        .into_response()
}

fn authorized(s: &FakeState, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    lock(&s.valid_tokens).contains(token)
}

/// KRT's bulk handle: one result per item, in order.
async fn krt_statuses(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.push_calls.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = krt_gate(&s, &headers).await {
        return refused;
    }
    let items = body["items"].as_array().cloned().unwrap_or_default();
    match take(&s, &items) {
        Ok(results) => Json(json!({"results": results})).into_response(),
        Err(refused) => refused,
    }
}

/// KRT's per-driver handle: one item, one result.
async fn krt_single(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(item): Json<Value>,
) -> Response {
    s.single_calls.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = krt_gate(&s, &headers).await {
        return refused;
    }
    match take(&s, std::slice::from_ref(&item)) {
        Ok(mut results) => Json(results.remove(0)).into_response(),
        Err(refused) => refused,
    }
}

/// What every status call goes through first: trace header, gate, delay, down, token.
async fn krt_gate(s: &FakeState, headers: &HeaderMap) -> Option<Response> {
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    lock(&s.push_traceparents).push(traceparent.map(str::to_owned));
    let _gate = s.push_gate.read().await;
    let delay = s.push_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if s.krt_down.load(Ordering::Relaxed) {
        return Some(unavailable(s));
    }
    if !authorized(s, headers) {
        s.unauthorized_answers.fetch_add(1, Ordering::Relaxed);
        return Some((StatusCode::UNAUTHORIZED, "bad token").into_response());
    }
    None
}

/// Takes `items` (recording them as pushed) or refuses the whole request.
#[allow(clippy::result_large_err)]
fn take(s: &FakeState, items: &[Value]) -> Result<Vec<Value>, Response> {
    let name = |it: &Value| match (it["deptrans_id"].as_str(), it["license"].as_str()) {
        (Some(id), _) => Some(format!("id:{id}")),
        (None, Some(l)) => Some(format!("lic:{l}")),
        _ => None,
    };
    {
        let refused = lock(&s.refused);
        if let Some((i, d)) = items
            .iter()
            .filter_map(name)
            .enumerate()
            .find(|(_, d)| refused.contains(d))
        {
            // Like many real APIs, the error echoes the offending value.
            let body =
                json!({"code": "invalid_item", "message": format!("items[{i}]: {d} is not valid")});
            return Err((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
    }
    let mut results = Vec::new();
    let mut pushed = lock(&s.pushed);
    let rejected = lock(&s.rejected).clone();
    for it in items {
        let Some(driver) = name(it) else {
            results.push(json!({"result": "rejected"}));
            continue;
        };
        if rejected.contains(&driver) {
            results
                .push(json!({"result": "rejected", "reason": format!("{driver} has no permit")}));
            continue;
        }
        let status = it["status"].as_str().unwrap_or_default().to_owned();
        let open = status != "offline";
        pushed.push(Pushed {
            driver,
            status,
            timestamp: it["timestamp"].as_str().unwrap_or_default().to_owned(),
        });
        results.push(json!({
            "result": "ok",
            "session_status": if open { "open" } else { "closed" },
            "ended_at": "2030-01-01T00:00:00Z",
        }));
    }
    Ok(results)
}

async fn krt_check(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if s.krt_down.load(Ordering::Relaxed) {
        return unavailable(&s);
    }
    if !authorized(&s, &headers) {
        s.unauthorized_answers.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let id = body["deptrans_id"].as_str().unwrap_or_default();
    let lic = body["license"].as_str().unwrap_or_default();
    let matches = lock(&s.krt_ids).get(id).is_some_and(|l| l == lic);
    Json(json!({"match": matches})).into_response()
}

#[derive(Deserialize)]
struct FeedQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

fn page<T: Clone>(log: &[T], q: &FeedQuery) -> (Vec<T>, String, bool) {
    let from: usize = q
        .cursor
        .as_deref()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
        .min(log.len());
    let to = (from + q.limit.unwrap_or(100).max(1)).min(log.len());
    (log[from..to].to_vec(), to.to_string(), to < log.len())
}

async fn profiles_updates(State(s): State<Arc<FakeState>>, Query(q): Query<FeedQuery>) -> Response {
    if s.profiles_down.load(Ordering::Relaxed) {
        return unavailable(&s);
    }
    let (items, cursor, has_more) = page(&lock(&s.profiles), &q);
    let profiles: Vec<Value> = items
        .into_iter()
        .map(|(p, d, pd)| json!({"park_id": p, "driver_profile_id": d, "driver_license_pd_id": pd}))
        .collect();
    Json(json!({"profiles": profiles, "cursor": cursor, "has_more": has_more})).into_response()
}

async fn categories_updates(
    State(s): State<Arc<FakeState>>,
    Query(q): Query<FeedQuery>,
) -> Response {
    if s.categories_down.load(Ordering::Relaxed) {
        return unavailable(&s);
    }
    let (items, cursor, has_more) = page(&lock(&s.categories), &q);
    let drivers: Vec<Value> = items
        .into_iter()
        .map(|(p, d, c)| json!({"park_id": p, "driver_profile_id": d, "categories": c}))
        .collect();
    Json(json!({"drivers": drivers, "cursor": cursor, "has_more": has_more})).into_response()
}

async fn personal_retrieve(State(s): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    if s.personal_down.load(Ordering::Relaxed) {
        return unavailable(&s);
    }
    let licences = lock(&s.licences);
    let items: Vec<Value> = body["ids"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|id| {
            let id = id.as_str()?;
            Some(json!({"id": id, "license": licences.get(id)?}))
        })
        .collect();
    Json(json!({"items": items})).into_response()
}

async fn positions(State(s): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    if s.trackstory_down.load(Ordering::Relaxed) {
        return unavailable(&s);
    }
    let known = lock(&s.positions);
    let out: Vec<Value> = body["drivers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| {
            let key = (
                d["park_id"].as_str()?.to_owned(),
                d["driver_profile_id"].as_str()?.to_owned(),
            );
            let (lat, lon) = known.get(&key)?;
            Some(
                json!({"park_id": key.0, "driver_profile_id": key.1, "lat": lat, "lon": lon,
                        "timestamp": "2026-01-01T00:00:00Z"}),
            )
        })
        .collect();
    Json(json!({"positions": out})).into_response()
}
