//! Topic declarations and their idempotent application through the Kafka admin API.

use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::KafkaSettings;

/// One topic as an operator declares it in `deploy/topics.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count; the ceiling for consumer parallelism.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Retention in milliseconds; `-1` keeps records forever.
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// `delete` or `compact`.
    #[serde(default = "default_cleanup")]
    pub cleanup_policy: String,
    /// Replication factor; `-1` (the default) takes the broker's `default.replication.factor`.
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// `min.insync.replicas` of the topic; absent takes the broker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<i32>,
}

fn default_partitions() -> i32 {
    6
}
fn default_retention_ms() -> i64 {
    7 * 24 * 3_600_000
}
fn default_cleanup() -> String {
    "delete".into()
}
fn default_replication() -> i32 {
    -1
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            retention_ms: default_retention_ms(),
            cleanup_policy: default_cleanup(),
            replication: default_replication(),
            min_insync_replicas: None,
        }
    }

    /// The same topic with the replication settings of `r`.
    pub fn replicated(mut self, r: &Replication) -> Self {
        self.replication = r.replication;
        self.min_insync_replicas = r.min_insync_replicas;
        self
    }
}

/// Replication of topics a service creates itself (retry tiers, dead letters, replays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Replication {
    /// Replication factor; `-1` takes the broker's `default.replication.factor`.
    pub replication: i32,
    /// `min.insync.replicas`; absent takes the broker's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<i32>,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            replication: default_replication(),
            min_insync_replicas: None,
        }
    }
}

/// The `deploy/topics.toml` document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    /// Declared topics.
    #[serde(default)]
    pub topics: Vec<TopicSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot read topics file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse topics file {path}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("kafka admin")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

impl TopicsFile {
    pub fn read(path: &Path) -> Result<Self, TopicError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopicError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| TopicError::Parse {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Creates every topic that does not exist yet; existing topics are left as they are.
pub async fn ensure_topics(kafka: &KafkaSettings, specs: &[TopicSpec]) -> Result<(), TopicError> {
    if specs.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = kafka.admin_config().create()?;
    let retention: Vec<String> = specs.iter().map(|s| s.retention_ms.to_string()).collect();
    let min_isr: Vec<Option<String>> = specs
        .iter()
        .map(|s| s.min_insync_replicas.map(|m| m.to_string()))
        .collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .zip(&min_isr)
        .map(|((s, r), m)| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            )
            .set("retention.ms", r)
            .set("cleanup.policy", &s.cleanup_policy);
            match m {
                Some(m) => t.set("min.insync.replicas", m),
                None => t,
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(())
}
