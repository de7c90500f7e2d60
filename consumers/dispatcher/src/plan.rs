//! The dispatcher's config resolved once, at start: the mark-notify integrations file expanded
//! into subscribers, the whole config validated, and every topic and consumer-group name of
//! every subscriber computed here. The worker set-up, the subscriber registry, the admin API
//! and replay read the plan; none of them expands the config or formats a name again.

use switchyard_runtime::topics::TopicSpec;

use crate::config::{ConfigCheckError, DispatcherConfig, RetryPolicy, SubscriberConfig};
use crate::integrations::IntegrationsFile;

/// Dead letters are kept for 30 days: long enough to be noticed, browsed and replayed.
const DEAD_LETTER_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// The resolved config: what `run` starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config, with the mark-notify integrations already turned into `subscribers`.
    pub config: DispatcherConfig,
    pub subscribers: Vec<SubscriberPlan>,
    /// The mark-notify integrations file the subscribers came from, if any (watched).
    pub integrations_file: Option<std::path::PathBuf>,
}

/// One subscriber with every name it uses.
#[derive(Debug, Clone)]
pub struct SubscriberPlan {
    pub config: SubscriberConfig,
    /// Its own retry policy, or the dispatcher's default.
    pub policy: RetryPolicy,
    /// The consumer group that reads its source and retry topics.
    pub group_id: String,
    /// One per tier of `policy`, in order.
    pub retry_topics: Vec<String>,
    pub dead_letter_topic: String,
    /// The group whose committed offsets say how far replays of all dead letters got.
    pub dead_letter_replay_group: String,
    /// The throw-away group of a replay from a source topic.
    pub topic_replay_group: String,
}

impl SubscriberPlan {
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

impl Plan {
    /// Expands and validates `config`; fails naming the bad key.
    pub fn resolve(mut config: DispatcherConfig) -> Result<Self, ConfigCheckError> {
        let integrations_file = config
            .mark_notify
            .as_ref()
            .map(|m| m.integrations_file.clone());
        if let Some(section) = config.mark_notify.take() {
            let file = IntegrationsFile::read(&section.integrations_file)
                .map_err(|e| ConfigCheckError::Integrations(e.to_string()))?;
            config
                .subscribers
                .extend(file.into_subscribers(&section.topic));
        }
        config.validate()?;
        let subscribers = config
            .subscribers
            .iter()
            .map(|s| {
                let policy = config.policy(s).clone();
                let group_id = config.group_id(&s.name);
                SubscriberPlan {
                    retry_topics: (0..policy.tiers_ms.len())
                        .map(|tier| config.retry_topic(&s.name, tier))
                        .collect(),
                    dead_letter_topic: config.dead_letter_topic(&s.name),
                    dead_letter_replay_group: format!("{group_id}.dlq-replay"),
                    topic_replay_group: format!("{group_id}.replay"),
                    group_id,
                    policy,
                    config: s.clone(),
                }
            })
            .collect();
        Ok(Self {
            config,
            subscribers,
            integrations_file,
        })
    }

    pub fn subscriber(&self, name: &str) -> Option<&SubscriberPlan> {
        self.subscribers.iter().find(|s| s.name() == name)
    }

    /// Retry and dead-letter topics of every subscriber, as the dispatcher creates them.
    pub fn derived_topics(&self) -> Vec<TopicSpec> {
        let cfg = &self.config;
        let mut out = Vec::new();
        for s in &self.subscribers {
            for topic in &s.retry_topics {
                out.push(
                    TopicSpec::new(topic.clone(), cfg.retry_partitions)
                        .replicated(&cfg.derived_topics),
                );
            }
            let mut dlq = TopicSpec::new(s.dead_letter_topic.clone(), cfg.retry_partitions)
                .replicated(&cfg.derived_topics);
            dlq.retention_ms = DEAD_LETTER_RETENTION_MS;
            out.push(dlq);
        }
        out
    }
}
