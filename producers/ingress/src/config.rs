//! Ingress configuration; `uid_notify.mode` is re-read at runtime (the kill switch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use switchyard_runtime::{load_config, ConfigError, KafkaSettings, Shutdown};

/// Env var prefix: `SWITCHYARD_INGRESS_KAFKA__BOOTSTRAP_SERVERS=...`.
pub const ENV_PREFIX: &str = "SWITCHYARD_INGRESS";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Broker connection.
    pub kafka: KafkaSettings,
    /// Upper bound for one request after its head: body read (408 past it) and broker ack
    /// included (503 past it, so the caller retries).
    pub request_timeout_ms: u64,
    /// From a request's first byte to its complete head; the connection is closed past it.
    pub header_read_timeout_ms: u64,
    /// A kept-alive connection with no request is closed after this. Keep it longer than the
    /// callers' pool idle timeouts (Go and reqwest: 90 s), or their reuse races the close.
    pub idle_timeout_ms: u64,
    /// How often the config file is checked for changes (kill switches).
    pub reload_interval_ms: u64,
    /// `POST /v1/uid-notify`.
    pub uid_notify: UidNotifyConfig,
    /// `POST /v1/driver-status`.
    pub driver_status: crate::driver_status::DriverStatusConfig,
    /// `POST /4.0/mark-notify/v1/seen`.
    pub mark_notify: crate::mark_notify::MarkNotifyConfig,
    /// `POST /v1/events/{event_type}`: the domain event registry.
    pub domain_events: crate::domain_events::DomainEventsConfig,
    /// Callers, their credentials and routes.
    pub auth: crate::auth::AuthConfig,
    /// TLS, with optional client certificates (a caller may be named by its certificate's
    /// common name: `auth.callers[].client_cn`). Unset: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<switchyard_runtime::http::tls::TlsConfig>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            kafka: KafkaSettings::default(),
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            reload_interval_ms: 2_000,
            uid_notify: UidNotifyConfig::default(),
            driver_status: crate::driver_status::DriverStatusConfig::default(),
            mark_notify: crate::mark_notify::MarkNotifyConfig::default(),
            domain_events: crate::domain_events::DomainEventsConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UidNotifyConfig {
    /// The kill switch, reloaded while running: `on` publishes; `hold` publishes too while the
    /// uid-notify subscribers are paused in the dispatcher (nothing delivered, nothing lost);
    /// `off` answers 503 with `Retry-After`, so the identity provider keeps and retries the event.
    pub mode: UidNotifyMode,
    /// `Retry-After` (seconds) of the 503 answered while `mode = "off"`.
    pub retry_after_secs: u64,
    /// Topic the account-link events go to.
    pub topic: String,
}

impl Default for UidNotifyConfig {
    fn default() -> Self {
        Self {
            mode: UidNotifyMode::On,
            retry_after_secs: 60,
            topic: "uid-notify".into(),
        }
    }
}

/// `uid_notify.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UidNotifyMode {
    /// Accept and publish.
    #[default]
    On,
    /// Accept and publish; delivery is held by pausing the subscribers in the dispatcher.
    Hold,
    /// Refuse with 503 + `Retry-After`: nothing is accepted, the sender keeps the events.
    Off,
}

impl UidNotifyMode {
    pub const ALL: [Self; 3] = [Self::On, Self::Hold, Self::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Hold => "hold",
            Self::Off => "off",
        }
    }
}

impl IngressConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        load_config(file, ENV_PREFIX)
    }

    /// The connection deadlines: a request head's arrival, and the keep-alive wait.
    pub fn conn_deadlines(&self) -> switchyard_runtime::http::ConnDeadlines {
        switchyard_runtime::http::ConnDeadlines {
            header_read: Duration::from_millis(self.header_read_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    /// What a caller may take after the head: the body and the answer, and the largest body.
    pub fn request_deadline(&self) -> switchyard_runtime::http::RequestDeadline {
        switchyard_runtime::http::RequestDeadline {
            within: Duration::from_millis(self.request_timeout_ms),
            // The largest of the routes' own limits (domain events).
            max_body: crate::domain_events::MAX_BODY,
        }
    }
}

/// The parts of the config that change without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Switches {
    pub uid_notify_mode: UidNotifyMode,
    pub uid_notify_retry_after_secs: u64,
}

impl From<&IngressConfig> for Switches {
    fn from(cfg: &IngressConfig) -> Self {
        Self {
            uid_notify_mode: cfg.uid_notify.mode,
            uid_notify_retry_after_secs: cfg.uid_notify.retry_after_secs,
        }
    }
}

/// Live view of the reloadable switches.
pub type LiveSwitches = Arc<ArcSwap<Switches>>;

/// Re-reads `file` whenever its modification time changes; a file that fails to load keeps
/// the previous switches and logs why.
pub async fn watch(
    file: PathBuf,
    live: LiveSwitches,
    every: Duration,
    shutdown: Shutdown,
    on_change: impl Fn(&Switches) + Send,
) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = mtime(&file);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            _ = tick.tick() => {}
        }
        let now = mtime(&file);
        if now == seen {
            continue;
        }
        seen = now;
        match IngressConfig::load(Some(&file)) {
            Ok(cfg) => {
                let next = Switches::from(&cfg);
                if **live.load() != next {
                    tracing::info!(?next, "config switches reloaded");
                    on_change(&next);
                    live.store(Arc::new(next));
                }
            }
            Err(e) => tracing::warn!(error = %e, "config reload failed, keeping previous"),
        }
    }
}
