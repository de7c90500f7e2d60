//! deptrans configuration: broker, Postgres, regions, categories, upstream services and KRT.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_runtime::{load_config, ConfigError, KafkaSettings};

use super::geo::Polygon;
use super::records::Format;

/// Env var prefix: `SWITCHYARD_DEPTRANS_POSTGRES__URL=...`.
pub const ENV_PREFIX: &str = "SWITCHYARD_DEPTRANS";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeptransConfig {
    /// Address of the driver, internal, `/ping` and `/metrics` endpoints.
    pub listen: String,
    /// Broker connection.
    pub kafka: KafkaSettings,
    /// Topic carrying `driver.status` envelopes when `sources` is empty (then it is the one
    /// envelope source, dead letters to `<topic>.deptrans.dlq`); ignored otherwise.
    pub topic: String,
    /// Topics statuses are read from, each with its format and dead-letter topic; empty means
    /// the single envelope source `topic`.
    pub sources: Vec<SourceConfig>,
    /// Consumer group of the status consumer.
    pub group_id: String,
    /// PostgreSQL holding schema `deptrans`.
    pub postgres: PostgresConfig,
    /// Regions whose drivers are reported; a driver outside all of them is skipped.
    pub regions: Vec<Region>,
    /// Tariff categories of which a driver must work at least one to be reported.
    pub categories: Vec<String>,
    /// Status consumer batching.
    pub consumer: ConsumerConfig,
    /// Periodic sender to KRT.
    pub sender: SenderConfig,
    /// The regulator's system.
    pub krt: KrtConfig,
    /// driver-profiles, personal, driver-categories and driver-trackstory.
    pub upstream: UpstreamConfig,
    /// Driver and internal HTTP API.
    pub api: ApiConfig,
    /// Days of session history kept (1-30).
    pub retention_days: u32,
    /// How often the retention job runs.
    pub retention_interval_ms: u64,
    /// Rows the retention job deletes per statement.
    pub retention_batch: i64,
    /// How often the queue gauges (rows, oldest age) are read from Postgres.
    pub queue_metrics_interval_ms: u64,
    /// How long shutdown waits for in-flight work.
    pub drain_timeout_ms: u64,
    /// The supply-loss gauges (`[supply]`).
    pub supply: SupplyConfig,
}

/// The supply-loss gauges: drivers active in the configured regions and categories in the last
/// `window_minutes`, split by KRT state, recomputed every `interval_ms` from memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupplyConfig {
    /// A driver is active for this long after an online or busy status that passed the filter
    /// (1-1440).
    pub window_minutes: u32,
    pub interval_ms: u64,
}

impl Default for SupplyConfig {
    fn default() -> Self {
        Self {
            window_minutes: 15,
            interval_ms: 15_000,
        }
    }
}

impl Default for DeptransConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8082".into(),
            kafka: KafkaSettings::default(),
            topic: DEFAULT_TOPIC.into(),
            sources: Vec::new(),
            group_id: "deptrans-status".into(),
            postgres: PostgresConfig::default(),
            regions: vec![Region::moscow()],
            categories: vec!["econom".into(), "comfort".into(), "comfort_plus".into()],
            consumer: ConsumerConfig::default(),
            sender: SenderConfig::default(),
            krt: KrtConfig::default(),
            upstream: UpstreamConfig::default(),
            api: ApiConfig::default(),
            retention_days: 7,
            retention_interval_ms: 600_000,
            retention_batch: 1_000,
            queue_metrics_interval_ms: 5_000,
            drain_timeout_ms: 10_000,
            supply: SupplyConfig::default(),
        }
    }
}

/// The status topic of the default configuration.
pub const DEFAULT_TOPIC: &str = "contractor-statuses-events";

/// Suffix of a source's default dead-letter topic.
pub const DEAD_LETTER_SUFFIX: &str = ".deptrans.dlq";

/// One topic statuses are read from (`[[sources]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Topic to consume (with the group `group_id`).
    pub topic: String,
    /// `envelope` (switchyard's protobuf envelope, the default) or `json` (the plain record
    /// of `schemas/deptrans/contractor-status.v1.json`).
    #[serde(default)]
    pub format: Format,
    /// Where records that cannot be decoded go, with why and where from in `sy-*` headers;
    /// default `<topic>.deptrans.dlq`. Created at start when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
}

impl SourceConfig {
    /// An envelope source with the default dead-letter topic.
    pub fn envelope(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            format: Format::Envelope,
            dead_letter_topic: None,
        }
    }

    /// A JSON source with the default dead-letter topic.
    pub fn json(topic: &str) -> Self {
        Self {
            format: Format::Json,
            ..Self::envelope(topic)
        }
    }

    /// The configured dead-letter topic, or `<topic>.deptrans.dlq`.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}{DEAD_LETTER_SUFFIX}", self.topic))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq-style URL, e.g. `postgres://postgres:postgres@127.0.0.1:5432/deptrans`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres:postgres@127.0.0.1:5432/deptrans".into(),
            pool_size: 8,
        }
    }
}

/// A named polygon; `points` are `[lon, lat]` pairs, closing edge implied.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Name used in logs and metrics, e.g. `moscow`.
    pub name: String,
    /// Vertices as `[lon, lat]`.
    pub points: Vec<[f64; 2]>,
}

impl Region {
    /// Moscow within (roughly) the Central Ring Road, as a coarse default.
    pub fn moscow() -> Self {
        Self {
            name: "moscow".into(),
            points: vec![
                [36.80, 55.14],
                [38.20, 55.14],
                [38.20, 56.02],
                [36.80, 56.02],
            ],
        }
    }

    pub fn polygon(&self) -> Polygon {
        Polygon::new(self.points.iter().map(|p| (p[0], p[1])).collect())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Whether this instance runs the status consumer.
    pub enabled: bool,
    /// Most events upserted in one statement.
    pub batch_max: usize,
    /// Longest wait to fill a batch once its first event arrived.
    pub batch_linger_ms: u64,
    /// Pause between retries of a batch whose Postgres write or trackstory lookup failed.
    pub retry_backoff_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_max: 2_000,
            batch_linger_ms: 50,
            retry_backoff_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderConfig {
    /// Whether this instance runs the sender.
    pub enabled: bool,
    /// Pause between sender runs when the queue is empty.
    pub interval_ms: u64,
    /// Rows claimed per run.
    pub batch_size: i64,
    /// Rows per KRT bulk request.
    pub bulk_size: usize,
    /// KRT bulk requests in flight at once.
    pub concurrency: usize,
    /// How long a claim keeps other instances off a row; must exceed one run.
    pub lease_ms: u64,
    /// First wait of a deferred row (driver unknown to the profiles cache, or no licence in
    /// personal) before the next try; doubles per try up to `deferred_delay_max_ms`.
    pub unknown_driver_delay_ms: u64,
    /// Longest wait between tries of a deferred row.
    pub deferred_delay_max_ms: u64,
    /// A row deferred for this long moves to `deptrans.rejected` with its reason.
    pub deferred_max_age_ms: u64,
    /// First back-off after KRT failed; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    /// Longest back-off.
    pub backoff_max_ms: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 1_000,
            batch_size: 500,
            bulk_size: 100,
            concurrency: 4,
            lease_ms: 60_000,
            unknown_driver_delay_ms: 60_000,
            deferred_delay_max_ms: 900_000,
            deferred_max_age_ms: 21_600_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KrtConfig {
    /// Base URL, e.g. `https://krt.example`.
    pub url: String,
    /// Client id for `/auth/token`.
    pub client_id: String,
    /// Client secret for `/auth/token`; never logged.
    pub client_secret: String,
    /// A token is refreshed this long before it expires.
    pub refresh_margin_ms: u64,
    /// Timeout of one KRT request.
    pub timeout_ms: u64,
    /// `bulk`: `POST /v1/statuses` with up to `sender.bulk_size` items; `single`: KRT's
    /// per-driver handle `POST /v1/drivers/status`, one request per row, `sender.concurrency`
    /// in flight, at most `single_rate_per_sec` per second (until KRT has bulk methods).
    pub mode: KrtMode,
    /// Most per-driver requests started per second per instance in `single` mode; 0 = no limit.
    pub single_rate_per_sec: u32,
}

/// How statuses are pushed to KRT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KrtMode {
    #[default]
    Bulk,
    Single,
}

impl std::fmt::Debug for KrtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KrtConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Default for KrtConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9301".into(),
            client_id: "switchyard".into(),
            client_secret: String::new(),
            refresh_margin_ms: 60_000,
            timeout_ms: 5_000,
            mode: KrtMode::Bulk,
            single_rate_per_sec: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// driver-profiles base URL.
    pub profiles_url: String,
    /// personal base URL.
    pub personal_url: String,
    /// driver-categories base URL.
    pub categories_url: String,
    /// driver-trackstory base URL.
    pub trackstory_url: String,
    /// Timeout of one upstream request.
    pub timeout_ms: u64,
    /// How often the caches poll their updates feeds.
    pub cache_refresh_ms: u64,
    /// Page size asked of the updates feeds.
    pub cache_page_size: usize,
    /// How long start-up waits for the caches to fill before refusing to start.
    pub cache_startup_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            profiles_url: "http://127.0.0.1:9302".into(),
            personal_url: "http://127.0.0.1:9303".into(),
            categories_url: "http://127.0.0.1:9304".into(),
            trackstory_url: "http://127.0.0.1:9305".into(),
            timeout_ms: 3_000,
            cache_refresh_ms: 5_000,
            cache_page_size: 1_000,
            cache_startup_timeout_ms: 30_000,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Internal API clients: name -> API key sent as `X-API-Key`; never logged.
    pub clients: BTreeMap<String, String>,
    /// Largest `limit` of the updates endpoints.
    pub max_page: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            clients: BTreeMap::new(),
            max_page: 1_000,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.clients.keys().collect();
        f.debug_struct("ApiConfig")
            .field("clients", &names)
            .field("max_page", &self.max_page)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigCheckError {
    #[error(transparent)]
    Load(#[from] ConfigError),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigCheckError {
    ConfigCheckError::Invalid {
        key,
        message: message.into(),
    }
}

impl DeptransConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigCheckError> {
        let cfg: Self = load_config(file, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The sources to consume: `sources`, or the single envelope source `topic`.
    pub fn sources(&self) -> Vec<SourceConfig> {
        if self.sources.is_empty() {
            vec![SourceConfig::envelope(&self.topic)]
        } else {
            self.sources.clone()
        }
    }

    fn validate_sources(&self) -> Result<(), ConfigCheckError> {
        if !self.sources.is_empty()
            && self.topic != DEFAULT_TOPIC
            && !self.sources.iter().any(|s| s.topic == self.topic)
        {
            return Err(invalid(
                "topic",
                format!(
                    "{} is ignored when [[sources]] is set; list it as a source",
                    self.topic
                ),
            ));
        }
        let sources = self.sources();
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in sources.iter().enumerate() {
            if s.topic.trim().is_empty() {
                return Err(invalid(
                    "sources.topic",
                    format!("sources[{i}]: must not be empty"),
                ));
            }
            if !seen.insert(s.topic.as_str()) {
                return Err(invalid(
                    "sources.topic",
                    format!("sources[{i}]: {} is listed twice", s.topic),
                ));
            }
        }
        for (i, s) in sources.iter().enumerate() {
            let dlq = s.dead_letter_topic();
            if dlq.trim().is_empty() {
                return Err(invalid(
                    "sources.dead_letter_topic",
                    format!("sources[{i}]: must not be empty"),
                ));
            }
            if seen.contains(dlq.as_str()) {
                return Err(invalid(
                    "sources.dead_letter_topic",
                    format!("sources[{i}]: {dlq} is a source topic"),
                ));
            }
        }
        Ok(())
    }

    /// Fails fast on values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigCheckError> {
        self.validate_sources()?;
        if !(1..=30).contains(&self.retention_days) {
            return Err(invalid("retention_days", "must be between 1 and 30"));
        }
        if !(1..=1440).contains(&self.supply.window_minutes) {
            return Err(invalid(
                "supply.window_minutes",
                "must be between 1 and 1440",
            ));
        }
        if self.supply.interval_ms == 0 {
            return Err(invalid("supply.interval_ms", "must be positive"));
        }
        if self.regions.is_empty() {
            return Err(invalid("regions", "at least one region is required"));
        }
        for r in &self.regions {
            if r.points.len() < 3 {
                return Err(invalid(
                    "regions.points",
                    format!("region {} needs 3+ points", r.name),
                ));
            }
        }
        if self.categories.is_empty() {
            return Err(invalid("categories", "at least one category is required"));
        }
        if self.consumer.batch_max == 0 {
            return Err(invalid("consumer.batch_max", "must be positive"));
        }
        if self.sender.batch_size <= 0 || self.sender.bulk_size == 0 || self.sender.concurrency == 0
        {
            return Err(invalid(
                "sender",
                "batch_size, bulk_size and concurrency must be positive",
            ));
        }
        if self.api.max_page <= 0 {
            return Err(invalid("api.max_page", "must be positive"));
        }
        if self.retention_batch <= 0 {
            return Err(invalid("retention_batch", "must be positive"));
        }
        if self.queue_metrics_interval_ms == 0 {
            return Err(invalid("queue_metrics_interval_ms", "must be positive"));
        }
        Ok(())
    }

    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example_tests;
