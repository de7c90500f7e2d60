//! Dispatcher configuration: the subscribers, their targets and retry policies.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_runtime::topics::Replication;
use switchyard_runtime::{load_config, ConfigError, KafkaSettings};

pub use crate::breaker::BreakerConfig;

/// Env var prefix: `SWITCHYARD_DISPATCHER_KAFKA__BOOTSTRAP_SERVERS=...`.
pub const ENV_PREFIX: &str = "SWITCHYARD_DISPATCHER";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Address of the `/ping` and `/metrics` endpoints.
    pub listen: String,
    /// Broker connection.
    pub kafka: KafkaSettings,
    /// Prefix of every consumer group id; the subscriber's name follows.
    pub group_prefix: String,
    /// Prefix of derived retry and dead-letter topics.
    pub topic_prefix: String,
    /// Partitions of derived retry and dead-letter topics.
    pub retry_partitions: i32,
    /// Replication of derived retry, dead-letter and replay topics (`[derived_topics]`):
    /// `replication = -1` (default) takes the broker's default, as does an absent
    /// `min_insync_replicas`.
    pub derived_topics: Replication,
    /// How long shutdown waits for in-flight deliveries.
    pub drain_timeout_ms: u64,
    /// Retry policy of subscribers that set none.
    pub retry: RetryPolicy,
    /// When set, a built-in webhook sink that logs what it receives listens here.
    pub builtin_sink_listen: Option<String>,
    /// Who receives what.
    pub subscribers: Vec<SubscriberConfig>,
    /// mark-notify: integrations by tag, expanded into one subscriber per (tag, target).
    pub mark_notify: Option<MarkNotifySection>,
    /// The admin API and page on the `listen` address.
    pub admin: AdminConfig,
    /// The attempt log in PostgreSQL (also where pauses are kept); off when absent.
    pub attempt_log: Option<AttemptLogConfig>,
    /// How every HTTP target is called (`[webhooks]`).
    pub webhooks: WebhookClient,
    /// How often the config file and the integrations file are checked for changes, which
    /// add, remove or restart subscribers without a restart of the process.
    pub reload_interval_ms: u64,
}

/// The HTTP client side of webhook delivery, shared by every HTTP target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookClient {
    /// Time to open a connection (TCP and TLS) to a target; the target's `timeout_ms` bounds
    /// the whole attempt, this only the connect, so a dead host fails fast.
    pub connect_timeout_ms: u64,
    /// Bytes of a response body read at most; the rest is never read (the connection is
    /// dropped), so a target answering an endless body cannot hold a lane or memory.
    pub max_response_bytes: usize,
    /// Networks (`10.20.0.0/16`, `fd00::/8`) deliveries may reach even when refused below:
    /// link-local and cloud-metadata addresses always are, private ones under `public_only`.
    pub allow_networks: Vec<String>,
    /// Refuse private, loopback and shared ranges too (targets outside our network only).
    pub public_only: bool,
}

impl Default for WebhookClient {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            max_response_bytes: 64 * 1024,
            allow_networks: Vec::new(),
            public_only: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token of `/admin/api/*`; without one the admin API answers 404 (the page still
    /// loads but can do nothing).
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptLogConfig {
    /// PostgreSQL holding schema `switchyard_admin` (migrated at start-up).
    pub database_url: String,
    /// Attempts kept per subscriber; older ones are deleted by the retention pass.
    #[serde(default = "default_keep")]
    pub keep_per_subscriber: i64,
    /// Attempts older than this are deleted whatever the count.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: i64,
    /// Rows per COPY statement.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// A batch is written at the latest this long after its first row.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Rows waiting to be written; when full, new rows are dropped (and counted), never waited
    /// for: the log must not slow deliveries down.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_keep() -> i64 {
    1_000
}
fn default_retention_hours() -> i64 {
    72
}
fn default_batch() -> usize {
    2_000
}
fn default_flush_ms() -> u64 {
    200
}
fn default_buffer() -> usize {
    50_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkNotifySection {
    /// Topic the ingress publishes marks to.
    #[serde(default = "default_mark_topic")]
    pub topic: String,
    /// The integrations file (shared with the ingress, which reads only its tags).
    pub integrations_file: std::path::PathBuf,
}

fn default_mark_topic() -> String {
    "mark-notify".into()
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            kafka: KafkaSettings::default(),
            group_prefix: "switchyard.".into(),
            topic_prefix: "switchyard.".into(),
            retry_partitions: 6,
            derived_topics: Replication::default(),
            drain_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            builtin_sink_listen: None,
            subscribers: Vec::new(),
            mark_notify: None,
            admin: AdminConfig::default(),
            attempt_log: None,
            webhooks: WebhookClient::default(),
            reload_interval_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Unique name; names the consumer group and the retry/dead-letter topics.
    pub name: String,
    /// Source topics.
    pub topics: Vec<String>,
    /// Envelope event types delivered (e.g. `uid.bind`); empty means all. A versioned filter
    /// `tasks.task_assigned.v1` takes version 1 and every later (compatible) version.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// mark-notify tags delivered; empty means all. Only `mark.seen` events carry a tag.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where deliveries go.
    pub target: Target,
    /// Total attempts before dead-lettering; absent means retry forever.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Lanes of this replica: records of distinct keys delivered at once (one key is always
    /// sequential). `max_in_flight` bounds attempts for the whole subscriber; a replica runs
    /// at most the smaller of its lanes and its share of `max_in_flight` at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Delivery attempts per second for the whole subscriber, over every replica (each applies
    /// its share: the partitions of the source topics it owns over all of them). Every attempt
    /// counts: in-process retries, breaker probes, topic targets. Absent: unlimited.
    #[serde(default)]
    pub max_per_second: Option<f64>,
    /// Attempts in flight at once for the whole subscriber, over every replica (shared like
    /// `max_per_second`, at least 1 on a replica that owns a partition). Absent: unlimited.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Overrides the dispatcher-wide retry policy.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Start paused: the consumer holds its partitions (nothing delivered, lag grows), stored
    /// like an operator's pause (every replica holds), until resumed through the admin API
    /// (`switchyard resume <name>`); clear the flag too, or the next start pauses again. The
    /// uid-notify kill switch's `hold` mode uses it (or `switchyard pause <name>` live).
    #[serde(default)]
    pub paused: bool,
    /// The circuit breaker (`[subscribers.breaker]`); on by default.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// `none` (default): a record waiting in a retry tier does not hold back later records of
    /// its key. `key`: it does; later records of its key are parked behind it and delivered in
    /// their original order once it succeeds (needs `[attempt_log]`'s database, where the
    /// parked records are kept for every replica).
    #[serde(default)]
    pub ordering: Ordering,
}

/// Per-key order while records wait in retry tiers (see [`SubscriberConfig::ordering`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    None,
    Key,
}

/// Whether subscriber filter `filter` takes `env`: the exact type, or `<type>.v<N>` for
/// versions >= N, which the schema evolution check keeps compatible with vN.
pub fn type_matches(filter: &str, env: &events::Envelope) -> bool {
    if filter == env.event_type {
        return true;
    }
    match filter.rsplit_once(".v") {
        Some((name, v)) => {
            name == env.event_type && v.parse::<u32>().is_ok_and(|v| env.schema_version >= v)
        }
        None => false,
    }
}

fn default_concurrency() -> usize {
    64
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// HTTP POST of the event's JSON rendering.
    Http(HttpTarget),
    /// A record on another Kafka topic.
    Topic(TopicTarget),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicTarget {
    /// Destination topic; must exist (declare it in `deploy/topics.toml`).
    pub topic: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    /// Endpoint receiving the POST.
    pub url: String,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Standard Webhooks signing secret (`whsec_<base64>` or raw); unsigned when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// More secrets while rotating: every delivery is signed with `secret` and each of these,
    /// the signatures space-separated in one `webhook-signature` header (the specification's
    /// rotation); the subscriber accepts any one it knows. Add the new secret here, let the
    /// subscriber learn it, then make it `secret` and drop the old one.
    #[serde(default)]
    pub secrets: Vec<String>,
}

impl HttpTarget {
    /// Every signing secret, `secret` first; empty: deliveries are unsigned.
    pub fn signing_secrets(&self) -> impl Iterator<Item = &str> {
        self.secret
            .iter()
            .chain(self.secrets.iter())
            .map(String::as_str)
    }
}

fn default_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Quick attempts in process before a record is parked in a retry topic.
    pub in_process_attempts: u32,
    /// First in-process backoff; doubles each attempt, with full jitter.
    pub initial_backoff_ms: u64,
    /// Ceiling of the in-process backoff.
    pub max_backoff_ms: u64,
    /// Delay of each retry tier; the last one repeats until max attempts.
    pub tiers_ms: Vec<u64>,
    /// A `Retry-After` up to this long is waited in process; longer ones park the record.
    pub max_in_process_retry_after_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            in_process_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 2_000,
            tiers_ms: vec![10_000, 60_000, 600_000, 3_600_000],
            max_in_process_retry_after_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    pub fn tier_delay(&self, tier: usize) -> Duration {
        let ms = self
            .tiers_ms
            .get(tier)
            .or(self.tiers_ms.last())
            .copied()
            .unwrap_or(10_000);
        Duration::from_millis(ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigCheckError {
    #[error(transparent)]
    Load(#[from] ConfigError),
    #[error("mark-notify integrations: {0}")]
    Integrations(String),
    #[error("subscribers[{index}].{key}: {message}")]
    Invalid {
        index: usize,
        key: &'static str,
        message: String,
    },
    #[error("{key}: {message}")]
    Setting {
        key: &'static str,
        message: &'static str,
    },
}

impl DispatcherConfig {
    /// Loads and validates the config as written. The mark-notify integrations file is read by
    /// [`crate::plan::Plan::resolve`], which every start goes through.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigCheckError> {
        let cfg: Self = load_config(file, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Fails fast on a config that would misbehave at runtime, naming the key.
    pub fn validate(&self) -> Result<(), ConfigCheckError> {
        let invalid = |index, key, message: &str| ConfigCheckError::Invalid {
            index,
            key,
            message: message.to_owned(),
        };
        if self.admin.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigCheckError::Setting {
                key: "admin.token",
                message: "must be at least 16 characters",
            });
        }
        if let Some(log) = &self.attempt_log {
            if log.batch_size == 0 || log.buffer == 0 {
                return Err(ConfigCheckError::Setting {
                    key: "attempt_log.batch_size",
                    message: "batch_size and buffer must be at least 1",
                });
            }
        }
        if self.webhooks.connect_timeout_ms == 0 {
            return Err(ConfigCheckError::Setting {
                key: "webhooks.connect_timeout_ms",
                message: "must be at least 1",
            });
        }
        if self.webhooks.max_response_bytes == 0 {
            return Err(ConfigCheckError::Setting {
                key: "webhooks.max_response_bytes",
                message: "must be at least 1",
            });
        }
        if self
            .webhooks
            .allow_networks
            .iter()
            .any(|n| crate::target_guard::Network::parse(n).is_none())
        {
            return Err(ConfigCheckError::Setting {
                key: "webhooks.allow_networks",
                message: "each entry must be an address or address/prefix",
            });
        }
        let guard = crate::target_guard::Guard::new(
            &self.webhooks.allow_networks,
            self.webhooks.public_only,
        );
        for (i, s) in self.subscribers.iter().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(i, "name", "must be non-empty [A-Za-z0-9._-]"));
            }
            if self.subscribers.iter().filter(|o| o.name == s.name).count() > 1 {
                return Err(invalid(i, "name", "is not unique"));
            }
            if s.topics.is_empty() {
                return Err(invalid(i, "topics", "must name at least one topic"));
            }
            if s.concurrency == 0 {
                return Err(invalid(i, "concurrency", "must be at least 1"));
            }
            if s.max_per_second.is_some_and(|r| !r.is_finite() || r <= 0.0) {
                return Err(invalid(i, "max_per_second", "must be a number above 0"));
            }
            if s.max_in_flight == Some(0) {
                return Err(invalid(i, "max_in_flight", "must be at least 1"));
            }
            if s.max_attempts == Some(0) {
                return Err(invalid(i, "max_attempts", "must be at least 1"));
            }
            if s.breaker.enabled && s.breaker.window == 0 {
                return Err(invalid(i, "breaker.window", "must be at least 1"));
            }
            if s.ordering == Ordering::Key && self.attempt_log.is_none() {
                return Err(invalid(
                    i,
                    "ordering",
                    "`key` keeps parked records in the dispatcher's database: set [attempt_log]",
                ));
            }
            if self.policy(s).tiers_ms.is_empty() {
                return Err(invalid(i, "retry.tiers_ms", "must have at least one tier"));
            }
            match &s.target {
                Target::Http(h) => {
                    if let Some(why) = crate::target_guard::check_url(&h.url, &guard) {
                        return Err(ConfigCheckError::Invalid {
                            index: i,
                            key: "target.url",
                            message: format!("(subscriber {}) {why}", s.name),
                        });
                    }
                    if h.signing_secrets().any(str::is_empty) {
                        return Err(invalid(i, "target.secrets", "a secret must not be empty"));
                    }
                    if h.secret.is_none() && !h.secrets.is_empty() {
                        return Err(invalid(
                            i,
                            "target.secrets",
                            "extra secrets sign only beside `secret`; set `secret` too",
                        ));
                    }
                }
                Target::Topic(t) => {
                    if t.topic.is_empty() || s.topics.contains(&t.topic) {
                        return Err(invalid(
                            i,
                            "target.topic",
                            "must be set and not a source topic",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn policy<'a>(&'a self, s: &'a SubscriberConfig) -> &'a RetryPolicy {
        s.retry.as_ref().unwrap_or(&self.retry)
    }

    /// Retry topic of `tier` for subscriber `name`.
    pub fn retry_topic(&self, name: &str, tier: usize) -> String {
        format!("{}{name}.retry.{tier}", self.topic_prefix)
    }

    pub fn dead_letter_topic(&self, name: &str) -> String {
        format!("{}{name}.dlq", self.topic_prefix)
    }

    /// Consumer group of subscriber `name`; its replay groups add a suffix to it (see the plan).
    pub fn group_id(&self, name: &str) -> String {
        format!("{}{name}", self.group_prefix)
    }
}
