//! The KRT client and its bearer token, shared by every instance through Postgres.
//! Contract: `schemas/deptrans/krt.openapi.json`.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use switchyard_runtime::trace;
use tracing::Instrument;

use super::config::{KrtConfig, KrtMode};
use super::db::lock;
use super::metrics::DeptransMetrics;
use super::upstream::Licence;

#[derive(Debug, thiserror::Error)]
pub enum KrtError {
    #[error("krt rejected the token")]
    Unauthorized,
    #[error("krt unavailable: {0}")]
    Unavailable(String),
    /// A 4xx other than 401/429: KRT will not take this request as it is, however often it is
    /// retried. `excerpt` is the start of KRT's answer (may echo personal data: redact before
    /// storing or logging).
    #[error("krt refused the request with {status}")]
    Refused { status: u16, excerpt: String },
    /// A 2xx whose body is not the documented answer.
    #[error("krt answered something that is not the documented answer: {0}")]
    Malformed(String),
    #[error("token store")]
    Store(#[from] tokio_postgres::Error),
    #[error("token store pool")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Longest excerpt of a KRT answer kept with a refused row.
pub const EXCERPT_MAX: usize = 500;

/// The first [`EXCERPT_MAX`] bytes of `body` (cut at a character boundary).
pub fn excerpt(body: &str) -> String {
    let mut end = body.len().min(EXCERPT_MAX);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

/// A secret passed to Postgres: tokio-postgres logs statement parameters at debug level, so
/// this prints as `<redacted>` there.
struct SecretParam<'a>(&'a str);

impl std::fmt::Debug for SecretParam<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl tokio_postgres::types::ToSql for SecretParam<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A KRT bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AuthRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
}

#[derive(Deserialize)]
struct AuthResponse {
    access_token: String,
    expires_in: i64,
}

/// Driver status as KRT spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KrtStatus {
    Online,
    Busy,
    Offline,
}

impl KrtStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "busy" => Some(Self::Busy),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

/// One status report; the driver is named by the bound KRT id when there is one, else by licence.
#[derive(Clone, Serialize)]
pub struct StatusItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deptrans_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<Licence>,
    pub status: KrtStatus,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize)]
struct StatusRequest<'a> {
    items: &'a [StatusItem],
}

/// KRT's answer for one item, in request order.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StatusResult {
    /// Whatever else KRT says about the item (a reason for a rejection, say); kept as the
    /// answer excerpt of a rejected row.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// `ok` or `rejected`.
    pub result: String,
    /// State of the work shift, e.g. `open`, `closed`.
    #[serde(default)]
    pub session_status: Option<String>,
    /// When the shift ends (or ended).
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct StatusResponse {
    results: Vec<StatusResult>,
}

#[derive(Serialize)]
struct CheckRequest<'a> {
    deptrans_id: &'a str,
    license: &'a Licence,
}

#[derive(Deserialize)]
struct CheckResponse {
    #[serde(rename = "match")]
    matches: bool,
}

#[derive(Clone)]
pub struct KrtClient {
    http: reqwest::Client,
    cfg: KrtConfig,
    /// Paces per-driver requests (`single_rate_per_sec`), shared by every clone.
    pace: std::sync::Arc<Pace>,
}

/// Spaces request starts at least `1 / rate` apart, across every task of this instance.
pub struct Pace {
    every: Option<Duration>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    /// At most `per_sec` starts per second; 0 = no limit.
    pub fn new(per_sec: u32) -> Self {
        Self {
            every: (per_sec > 0).then(|| Duration::from_secs(1) / per_sec),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) {
        let Some(every) = self.every else { return };
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + every;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

impl KrtClient {
    pub fn new(cfg: &KrtConfig) -> Result<Self, KrtError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| KrtError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            cfg: cfg.clone(),
            pace: std::sync::Arc::new(Pace::new(cfg.single_rate_per_sec)),
        })
    }

    /// Bulk requests, or one request per driver.
    pub fn mode(&self) -> KrtMode {
        self.cfg.mode
    }

    async fn post<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&Token>,
        body: &B,
    ) -> Result<T, KrtError> {
        let span = tracing::info_span!(
            "krt",
            otel.name = %format_args!("POST {path}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.path = path,
            http.response.status_code = tracing::field::Empty,
        );
        let mut req = self.http.post(format!("{}{path}", self.cfg.url)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(&t.value);
        }
        for (name, value) in trace::headers(&span)
            .iter()
            .flat_map(trace::TraceHeaders::pairs)
        {
            req = req.header(name, value);
        }
        // reqwest errors carry the URL only, never the body or headers.
        let resp = req.send().instrument(span.clone()).await.map_err(|e| {
            span.record("otel.status_code", "ERROR");
            KrtError::Unavailable(e.to_string())
        })?;
        let status = resp.status();
        span.record("http.response.status_code", status.as_u16());
        if !status.is_success() {
            span.record("otel.status_code", "ERROR");
        }
        if status.as_u16() == 401 {
            return Err(KrtError::Unauthorized);
        }
        // Down, not a refusal of what was sent: 5xx, throttling, and answers that say the
        // endpoint or our access is wrong (a refusal would move every row to deptrans.rejected).
        if status.is_server_error() || matches!(status.as_u16(), 403 | 404 | 405 | 408 | 429) {
            return Err(KrtError::Unavailable(format!("status {status}")));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(KrtError::Refused {
                status: status.as_u16(),
                excerpt: excerpt(&body),
            });
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| KrtError::Unavailable(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| KrtError::Malformed(e.to_string()))
    }

    async fn auth(&self) -> Result<Token, KrtError> {
        let body = AuthRequest {
            client_id: &self.cfg.client_id,
            client_secret: &self.cfg.client_secret,
        };
        let resp: AuthResponse = self.post("/auth/token", None, &body).await?;
        Ok(Token {
            value: resp.access_token,
            expires_at: Utc::now() + chrono::Duration::seconds(resp.expires_in.max(0)),
        })
    }

    /// `POST /v1/statuses` (bulk).
    pub async fn push(
        &self,
        token: &Token,
        items: &[StatusItem],
    ) -> Result<Vec<StatusResult>, KrtError> {
        let resp: StatusResponse = self
            .post("/v1/statuses", Some(token), &StatusRequest { items })
            .await?;
        if resp.results.len() != items.len() {
            return Err(KrtError::Malformed(format!(
                "{} results for {} items",
                resp.results.len(),
                items.len()
            )));
        }
        Ok(resp.results)
    }

    /// `POST /v1/drivers/status`: KRT's per-driver handle, one status, one result.
    pub async fn push_one(
        &self,
        token: &Token,
        item: &StatusItem,
    ) -> Result<StatusResult, KrtError> {
        self.pace.wait().await;
        self.post("/v1/drivers/status", Some(token), item).await
    }

    /// `POST /v1/drivers/check`: does `deptrans_id` belong to the holder of `license`?
    pub async fn check(
        &self,
        token: &Token,
        deptrans_id: &str,
        license: &Licence,
    ) -> Result<bool, KrtError> {
        let resp: CheckResponse = self
            .post(
                "/v1/drivers/check",
                Some(token),
                &CheckRequest {
                    deptrans_id,
                    license,
                },
            )
            .await?;
        Ok(resp.matches)
    }
}

/// The token every instance shares: cached in memory, stored in `deptrans.krt_token`,
/// refreshed by one instance at a time under an advisory lock.
pub struct TokenStore {
    pool: Pool,
    pub client: KrtClient,
    margin: chrono::Duration,
    current: Mutex<Option<Token>>,
    metrics: std::sync::Arc<DeptransMetrics>,
}

impl TokenStore {
    pub fn new(
        pool: Pool,
        client: KrtClient,
        cfg: &KrtConfig,
        metrics: std::sync::Arc<DeptransMetrics>,
    ) -> Self {
        let margin =
            chrono::Duration::milliseconds(i64::try_from(cfg.refresh_margin_ms).unwrap_or(60_000));
        Self {
            pool,
            client,
            margin,
            current: Mutex::new(None),
            metrics,
        }
    }

    fn fresh(&self, t: &Token) -> bool {
        t.expires_at - self.margin > Utc::now()
    }

    /// A token that is valid for at least the margin.
    pub async fn get(&self) -> Result<Token, KrtError> {
        let cached = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(t) = cached.filter(|t| self.fresh(t)) {
            return Ok(t);
        }
        self.refresh(None).await
    }

    /// Loads the stored token, or asks KRT for a new one when the stored one is stale or is
    /// `rejected` (KRT answered 401 to it). Holding the lock means only one instance asks.
    pub async fn refresh(&self, rejected: Option<&Token>) -> Result<Token, KrtError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::TOKEN])
            .await?;
        let row = tx
            .query_opt(
                "SELECT access_token, expires_at FROM deptrans.krt_token WHERE id = 1",
                &[],
            )
            .await?;
        let stored = row.map(|r| Token {
            value: r.get(0),
            expires_at: r.get(1),
        });
        let token = match stored {
            Some(t) if self.fresh(&t) && rejected.is_none_or(|r| r.value != t.value) => t,
            _ => {
                let t = self.client.auth().await?;
                tx.execute(
                    "INSERT INTO deptrans.krt_token (id, access_token, expires_at, updated_at)
                     VALUES (1, $1, $2, now())
                     ON CONFLICT (id) DO UPDATE SET access_token = excluded.access_token,
                         expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                    &[&SecretParam(&t.value), &t.expires_at],
                )
                .await?;
                self.metrics.token_refreshes.inc();
                tracing::info!(expires_at = %t.expires_at, "krt token refreshed");
                t
            }
        };
        tx.commit().await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(token)
    }

    /// Runs `call` with a token; after a 401 refreshes once and retries.
    pub async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, KrtError>
    where
        F: Fn(Token) -> Fut,
        Fut: std::future::Future<Output = Result<T, KrtError>>,
    {
        let token = self.get().await?;
        match call(token.clone()).await {
            Err(KrtError::Unauthorized) => {
                tracing::info!("krt answered 401, refreshing the token");
                let token = self.refresh(Some(&token)).await?;
                call(token).await
            }
            other => other,
        }
    }
}
