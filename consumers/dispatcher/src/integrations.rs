//! mark-notify integrations: for each notification `tag`, the services that want to know it
//! was seen. Each (tag, target) pair becomes an ordinary subscriber, so delivery, retries and
//! dead-lettering are the dispatcher's, not a second copy.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{RetryPolicy, SubscriberConfig, Target};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrationsFile {
    /// Integrated services by tag.
    #[serde(default)]
    pub integrations: Vec<Integration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Integration {
    /// Notification tag, as apps send it.
    pub tag: String,
    /// Where marks of this tag go; each target is served independently.
    pub targets: Vec<IntegrationTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrationTarget {
    /// Name, unique within the tag; the subscriber is `mark-notify.{tag}.{name}`.
    pub name: String,
    /// `{ kind = "http", url, timeout_ms, secret }` or `{ kind = "topic", topic }`.
    pub target: Target,
    /// Attempts before the dead-letter topic; absent retries forever at the last tier.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Overrides the dispatcher-wide retry policy.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Deliveries in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    32
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IntegrationsError {
    #[error("reading {0}")]
    Read(String, #[source] std::io::Error),
    #[error("parsing {0}")]
    Parse(String, #[source] toml::de::Error),
}

impl IntegrationsFile {
    pub(crate) fn read(path: &Path) -> Result<Self, IntegrationsError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| IntegrationsError::Read(name.clone(), e))?;
        toml::from_str(&text).map_err(|e| IntegrationsError::Parse(name, e))
    }

    /// One subscriber per (tag, target), reading `topic` and filtering on the tag.
    pub(crate) fn into_subscribers(self, topic: &str) -> Vec<SubscriberConfig> {
        self.integrations
            .into_iter()
            .flat_map(|i| {
                let tag = i.tag;
                i.targets.into_iter().map(move |t| SubscriberConfig {
                    name: format!("mark-notify.{tag}.{}", t.name),
                    topics: vec![topic.to_owned()],
                    event_types: vec![events::event_type::MARK_SEEN.to_owned()],
                    tags: vec![tag.clone()],
                    target: t.target,
                    max_attempts: t.max_attempts,
                    concurrency: t.concurrency,
                    max_per_second: None,
                    max_in_flight: None,
                    retry: t.retry,
                    paused: false,
                    breaker: Default::default(),
                    ordering: Default::default(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tag_target_pair_is_a_subscriber() {
        let file: IntegrationsFile = toml::from_str(
            r#"
            [[integrations]]
            tag = "promo"
            [[integrations.targets]]
            name = "api"
            max_attempts = 5
            target = { kind = "http", url = "http://127.0.0.1:1/seen" }
            [[integrations.targets]]
            name = "log"
            target = { kind = "topic", topic = "promo-seen" }
            "#,
        )
        .unwrap();
        let subs = file.into_subscribers("mark-notify");
        let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mark-notify.promo.api", "mark-notify.promo.log"]);
        assert!(subs
            .iter()
            .all(|s| s.tags == ["promo"] && s.topics == ["mark-notify"]));
        assert_eq!(subs[0].max_attempts, Some(5));
        assert!(matches!(&subs[1].target, Target::Topic(t) if t.topic == "promo-seen"));
    }
}
