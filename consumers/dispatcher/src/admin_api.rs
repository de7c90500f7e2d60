//! The admin API on the dispatcher's listener (`/admin/api/*`, bearer token): subscribers with
//! state, lag, rates and dead letters; pause and resume; the dead-letter browser; replays run
//! as jobs with progress; the attempt log. Documented in `schemas/openapi/admin.json`
//! (see [`openapi`]).

pub mod model;
pub mod openapi;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use switchyard_runtime::http::{query, BadRequest};

use crate::control::Control;
use crate::replay::{self, ReplaySource};
pub use model::{
    AttemptList, AttemptView, DeadLetter, DeadLetterList, ErrorBody, JobStatus, PauseState,
    ReplayAccepted, SubscriberList, SubscriberView,
};

/// Shared by every admin handler.
pub struct AdminState {
    /// The subscribers and the plan in force (both change on a config reload).
    pub control: Arc<Control>,
    token: String,
    jobs: Mutex<HashMap<String, JobStatus>>,
}

impl AdminState {
    pub fn new(control: Arc<Control>, token: String) -> Self {
        Self {
            control,
            token,
            jobs: Mutex::default(),
        }
    }
}

/// A 4xx/5xx answer: `{"code", "message", "field"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn no_subscriber(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_subscriber",
            format!("no subscriber named {name}"),
        )
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "admin api failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error, see the dispatcher log",
        )
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: e.code,
            message: e.message,
            field: e.field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ErrorBody::new(self.code, self.message)
            .with_field(self.field)
            .into_response_with(self.status)
    }
}

/// The API routes; without a token every one answers 404.
pub fn routes(state: Option<Arc<AdminState>>) -> Router {
    let Some(state) = state else {
        return Router::new().route("/admin/api/{*rest}", get(disabled).post(disabled));
    };
    Router::new()
        .route("/admin/api/subscribers", get(subscribers))
        .route("/admin/api/subscribers/{name}/pause", post(pause))
        .route("/admin/api/subscribers/{name}/resume", post(resume))
        .route(
            "/admin/api/subscribers/{name}/dead-letters",
            get(dead_letters),
        )
        .route("/admin/api/subscribers/{name}/replay", post(start_replay))
        .route("/admin/api/jobs/{id}", get(job))
        .route("/admin/api/attempts", get(attempts))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "admin_disabled",
        "the admin API is off: set [admin] token in the dispatcher config",
    )
}

async fn authorize(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => {
            Ok(next.run(req).await)
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token in the authorization header",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every subscriber with its state, lag, counters, rates and dead letters waiting.
#[utoipa::path(
    get,
    path = "/admin/api/subscribers",
    responses(
        (status = 200, description = "All subscribers of this dispatcher", body = SubscriberList),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn subscribers(State(state): State<Arc<AdminState>>) -> Json<SubscriberList> {
    let subscribers = state
        .control
        .handles()
        .into_iter()
        .map(|h| {
            let stats = h.stats.snapshot();
            let (delivered_per_sec, failed_per_sec) = h.rates();
            let waiting = h.dead_letters();
            let (max_per_second, max_in_flight) = h.limits.effective();
            SubscriberView {
                name: h.name.clone(),
                topics: h.topics.clone(),
                target: h.target.clone(),
                state: state_name(h.is_paused()).to_owned(),
                paused_reason: h.paused_reason(),
                breaker: h.breaker.state().name().to_owned(),
                breaker_transitions: h.breaker.transitions(),
                parking_failed: h.stats.parking_failed(),
                lag: h.lag(),
                delivered: stats.delivered,
                failed_attempts: stats.failed_attempts,
                parked: stats.parked,
                dead_lettered: stats.dead_lettered,
                delivered_per_sec: round2(delivered_per_sec),
                failed_per_sec: round2(failed_per_sec),
                dead_letters: (waiting >= 0).then_some(waiting),
                max_per_second: max_per_second.map(round2),
                max_in_flight,
            }
        })
        .collect();
    Json(SubscriberList { subscribers })
}

fn state_name(paused: bool) -> &'static str {
    if paused {
        "paused"
    } else {
        "running"
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Stops delivering to a subscriber on every replica until resumed (kept across restarts).
#[utoipa::path(
    post,
    path = "/admin/api/subscribers/{name}/pause",
    params(("name" = String, Path, description = "Subscriber name")),
    responses(
        (status = 200, description = "Paused", body = PauseState),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`unknown_subscriber`", body = ErrorBody),
        (status = 500, description = "`internal`: the pause could not be stored", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn pause(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    switch(&state, &name, true).await
}

/// Delivers to a paused subscriber again, on every replica.
#[utoipa::path(
    post,
    path = "/admin/api/subscribers/{name}/resume",
    params(("name" = String, Path, description = "Subscriber name")),
    responses(
        (status = 200, description = "Running", body = PauseState),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`unknown_subscriber`", body = ErrorBody),
        (status = 500, description = "`internal`: the state could not be stored", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn resume(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    switch(&state, &name, false).await
}

async fn switch(
    state: &AdminState,
    name: &str,
    paused: bool,
) -> Result<Json<PauseState>, ApiError> {
    let found = state
        .control
        .set_paused(name, paused)
        .await
        .map_err(ApiError::internal)?;
    if !found {
        return Err(ApiError::no_subscriber(name));
    }
    Ok(Json(PauseState {
        name: name.to_owned(),
        state: state_name(paused).to_owned(),
    }))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<String>,
    subscriber: Option<String>,
}

/// The newest dead letters of a subscriber, newest first.
#[utoipa::path(
    get,
    path = "/admin/api/subscribers/{name}/dead-letters",
    params(
        ("name" = String, Path, description = "Subscriber name"),
        ("limit" = Option<i64>, Query, description = "Records to return, 1-500 (default 50)", minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "Dead letters", body = DeadLetterList),
        (status = 400, description = "`invalid_field`: `limit` is not an integer in 1-500", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`unknown_subscriber`", body = ErrorBody),
        (status = 500, description = "`internal`: the topic could not be read", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn dead_letters(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let Query(q) = q.map_err(query::rejection)?;
    let h = state
        .control
        .get(&name)
        .ok_or_else(|| ApiError::no_subscriber(&name))?;
    let limit =
        usize::try_from(query::page_limit("limit", q.limit.as_deref(), 50, 500)?).unwrap_or(50);
    let records = replay::browse_dead_letters(
        &state.control.plan().config.kafka,
        &h.dead_letter_topic,
        &h.replay_group,
        limit,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(DeadLetterList { records }))
}

/// Starts a replay into the subscriber's first retry tier: its dead letters, or a topic's records
/// between two offsets or times. Runs as a job.
#[utoipa::path(
    post,
    path = "/admin/api/subscribers/{name}/replay",
    params(("name" = String, Path, description = "Subscriber name")),
    request_body = crate::replay::ReplaySource,
    responses(
        (status = 202, description = "Started; poll the job", body = ReplayAccepted),
        (status = 400, description = "`invalid_body`; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`unknown_subscriber`", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn start_replay(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    if state.control.get(&name).is_none() {
        return Err(ApiError::no_subscriber(&name));
    }
    let source = ReplaySource::from_json(&body).map_err(|e| ApiError {
        field: e.field,
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.message)
    })?;
    let id = uuid::Uuid::now_v7().to_string();
    let status = JobStatus {
        id: id.clone(),
        subscriber: name.clone(),
        state: "running".into(),
        done: 0,
        total: 0,
        error: None,
    };
    {
        let mut jobs = lock(&state.jobs);
        if jobs.len() >= 200 {
            jobs.retain(|_, j| j.state == "running");
        }
        jobs.insert(id.clone(), status);
    }
    let st = state.clone();
    let job_id = id.clone();
    // Detached: the job outlives the request; its progress and end are read from `jobs`.
    switchyard_runtime::shutdown::spawn_detached("replay-job", async move {
        let progress = |done, total| {
            if let Some(j) = lock(&st.jobs).get_mut(&job_id) {
                j.done = done;
                j.total = total;
            }
        };
        let result = replay::replay(&st.control.plan(), &name, &source, progress).await;
        if let Some(j) = lock(&st.jobs).get_mut(&job_id) {
            match result {
                Ok(n) => {
                    j.state = "done".into();
                    j.done = n;
                }
                Err(e) => {
                    tracing::warn!(subscriber = %name, error = %e, "replay failed");
                    j.state = "failed".into();
                    j.error = Some(e.to_string());
                }
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(ReplayAccepted { job_id: id })))
}

/// Progress of a replay job (kept in memory of the replica that runs it).
#[utoipa::path(
    get,
    path = "/admin/api/jobs/{id}",
    params(("id" = String, Path, description = "`job_id` from the replay answer")),
    responses(
        (status = 200, description = "The job", body = JobStatus),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`unknown_job`", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn job(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    lock(&state.jobs)
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_job", format!("no job {id}")))
}

/// The newest delivery attempts from the attempt log, newest first.
#[utoipa::path(
    get,
    path = "/admin/api/attempts",
    params(
        ("subscriber" = Option<String>, Query, description = "Only this subscriber's attempts"),
        ("limit" = Option<i64>, Query, description = "Rows to return, 1-1000 (default 100)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "Attempts", body = AttemptList),
        (status = 400, description = "`invalid_field`: `limit` is not an integer in 1-1000", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`attempt_log_disabled` or `unknown_subscriber`", body = ErrorBody),
        (status = 500, description = "`internal`: the log could not be read", body = ErrorBody),
    ),
    tag = "admin"
)]
async fn attempts(
    State(state): State<Arc<AdminState>>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<AttemptList>, ApiError> {
    let Query(q) = q.map_err(query::rejection)?;
    let Some(pool) = &state.control.pool else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "attempt_log_disabled",
            "the attempt log is off: set [attempt_log] database_url in the dispatcher config",
        ));
    };
    if let Some(s) = &q.subscriber {
        if state.control.get(s).is_none() {
            return Err(ApiError::no_subscriber(s));
        }
    }
    let limit = query::page_limit("limit", q.limit.as_deref(), 100, 1_000)?;
    let rows = crate::attempt_log::recent(pool, q.subscriber.as_deref(), limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(AttemptList { attempts: rows }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
