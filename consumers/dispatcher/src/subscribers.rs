//! The running subscribers, and the watch on the config and integrations files that changes
//! them without a restart.
//!
//! Every `reload_interval_ms` the watch reads both files; when their bytes changed it loads
//! the config as at start (file, then `SWITCHYARD_DISPATCHER_*` env) and resolves a new plan.
//! A file that fails to load or validate changes nothing: the error (naming the key) is logged
//! and counted as `rejected`, and the running plan stays until the next change. Otherwise each
//! subscriber is compared with its running self by everything it is built from (its config,
//! policy, topic and group names, the webhook client settings):
//!
//! - removed: its worker stops as at shutdown (in-flight work finishes or parks, offsets are
//!   stored and committed), then leaves the registry;
//! - changed: stopped the same way, then started again from the new plan, in the same group;
//! - added: its retry and dead-letter topics are created, then it starts;
//! - the same: untouched (its worker, breaker, counters and connections go on).
//!
//! Settings that only a restart applies (`listen`, `kafka`, `admin`, `attempt_log`,
//! `builtin_sink_listen`) keep their running values; the reload logs which of them changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use serde::Serialize;
use switchyard_runtime::topics::ensure_topics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::attempt_log::AttemptLog;
use crate::config::{DispatcherConfig, Ordering, Target};
use crate::control::{Control, SubscriberHandle};
use crate::delivery::{Deliverer, Sink};
use crate::http_target;
use crate::metrics::{DispatchMetrics, ReloadLabels, SubscriberLabels};
use crate::offsets::Ledger;
use crate::ordered::OrderedKeys;
use crate::plan::{Plan, SubscriberPlan};
use crate::topic_sink::TopicSink;
use crate::worker::{GroupContext, GroupObserver, Worker, WorkerError};
use crate::DispatchError;

/// What every subscriber's worker is built with, besides its plan.
pub(crate) struct Shared {
    pub(crate) producer: FutureProducer,
    pub metrics: Arc<DispatchMetrics>,
    pub attempt_log: Option<AttemptLog>,
    pub control: Arc<Control>,
}

/// Which files to watch, and how often.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    pub config_file: PathBuf,
    pub interval: Duration,
}

struct Running {
    /// Everything the worker was built from, serialized: equal means unchanged.
    built_from: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The subscribers this process runs, by name.
pub(crate) struct Subscribers {
    shared: Shared,
    running: BTreeMap<String, Running>,
    failed_tx: mpsc::UnboundedSender<(String, WorkerError)>,
    failed_rx: mpsc::UnboundedReceiver<(String, WorkerError)>,
    /// Parent of every worker's stop token: the process's shutdown.
    stop: CancellationToken,
}

/// What a reload did, by subscriber name.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Subscribers {
    pub(crate) fn new(shared: Shared, stop: CancellationToken) -> Self {
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        Self {
            shared,
            running: BTreeMap::new(),
            failed_tx,
            failed_rx,
            stop,
        }
    }

    /// Starts every subscriber of `plan` (the plan at start; its topics already exist).
    pub(crate) async fn start(&mut self, plan: &Plan) -> Result<(), DispatchError> {
        let all: Vec<&SubscriberPlan> = plan.subscribers.iter().collect();
        self.launch(plan, &all).await
    }

    /// Runs until the process stops or a worker fails, applying config changes when `watch`
    /// is given; then stops every worker (they drain) and waits for them.
    pub(crate) async fn run(mut self, watch: Option<Watch>) -> Result<(), DispatchError> {
        let mut seen = match &watch {
            Some(w) => fingerprint(&w.config_file, &self.shared.control.plan()),
            None => None,
        };
        let tick = watch.as_ref().map_or(Duration::MAX, |w| w.interval);
        let outcome = loop {
            tokio::select! {
                () = self.stop.cancelled() => break Ok(()),
                Some((name, e)) = self.failed_rx.recv() => {
                    tracing::error!(subscriber = %name, error = %e, "subscriber worker failed");
                    break Err(DispatchError::Worker(e));
                }
                () = tokio::time::sleep(tick) => {
                    let Some(w) = &watch else { continue };
                    let now = fingerprint(&w.config_file, &self.shared.control.plan());
                    if now.is_some() && now != seen {
                        seen = now;
                        self.reload(&w.config_file).await;
                    }
                }
            }
        };
        self.stop.cancel();
        for (_, r) in std::mem::take(&mut self.running) {
            let _ = r.task.await;
        }
        outcome
    }

    /// Loads `file` and applies it; a bad file changes nothing (logged and counted).
    async fn reload(&mut self, file: &std::path::Path) {
        let loaded = DispatcherConfig::load(Some(file)).and_then(Plan::resolve);
        let result = match loaded {
            Err(e) => {
                tracing::error!(
                    file = %file.display(),
                    error = %http_target::chain(&e),
                    "config reload rejected; the running config stays"
                );
                "rejected"
            }
            Ok(plan) => match self.apply(plan).await {
                Ok(changes) if changes == Changes::default() => "unchanged",
                Ok(changes) => {
                    tracing::info!(
                        added = ?changes.added,
                        changed = ?changes.changed,
                        removed = ?changes.removed,
                        "config reloaded"
                    );
                    "applied"
                }
                Err(e) => {
                    tracing::error!(
                        error = %http_target::chain(&e),
                        "config reload failed part-way; subscribers not started are retried at the next change"
                    );
                    "rejected"
                }
            },
        };
        self.shared
            .metrics
            .config_reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Moves the running subscribers to `new`: stops the removed and changed ones, then
    /// starts the changed and added ones.
    pub(crate) async fn apply(&mut self, mut new: Plan) -> Result<Changes, DispatchError> {
        let old = self.shared.control.plan();
        keep_restart_only_settings(&old.config, &mut new.config);
        let mut changes = Changes::default();
        let wanted: BTreeMap<&str, &SubscriberPlan> =
            new.subscribers.iter().map(|s| (s.name(), s)).collect();
        for (name, running) in &self.running {
            match wanted.get(name.as_str()) {
                None => changes.removed.push(name.clone()),
                Some(sp) if built_from(&new, sp) != running.built_from => {
                    changes.changed.push(name.clone())
                }
                Some(_) => {}
            }
        }
        changes.added = wanted
            .keys()
            .filter(|n| !self.running.contains_key(**n))
            .map(|n| (*n).to_owned())
            .collect();
        for name in changes.removed.iter().chain(&changes.changed) {
            self.stop_one(name).await;
        }
        let new = Arc::new(new);
        self.shared.control.set_plan(new.clone());
        let start: Vec<&SubscriberPlan> = new
            .subscribers
            .iter()
            .filter(|s| {
                changes.added.iter().any(|n| n == s.name())
                    || changes.changed.iter().any(|n| n == s.name())
            })
            .collect();
        if !start.is_empty() {
            // A changed subscriber may have gained a retry tier.
            ensure_topics(&new.config.kafka, &derived_topics_of(&new, &start)).await?;
        }
        self.launch(&new, &start).await?;
        Ok(changes)
    }

    /// Registers `subs` (so stored pauses apply before their first record), then starts them.
    async fn launch(&mut self, plan: &Plan, subs: &[&SubscriberPlan]) -> Result<(), DispatchError> {
        let control = &self.shared.control;
        let handles: Vec<Arc<SubscriberHandle>> = subs
            .iter()
            .map(|sp| Arc::new(SubscriberHandle::new(sp, &self.shared.metrics)))
            .collect();
        for h in &handles {
            control.insert(h.clone());
        }
        control.load_pauses().await?;
        // `paused = true` in the config pauses, stored like an operator's pause so every
        // replica holds too; the admin API's resume (or the CLI's) lifts it.
        for sp in subs.iter().filter(|s| s.config.paused) {
            control.set_paused(sp.name(), true).await?;
        }
        for (sp, handle) in subs.iter().zip(handles) {
            let worker = self.build(plan, sp, handle)?;
            let stop = self.stop.child_token();
            let failed = self.failed_tx.clone();
            let name = sp.name().to_owned();
            let worker_stop = stop.clone();
            // Supervised here: a failure reaches `run` through `failed`, and every stop awaits it.
            let task = switchyard_runtime::shutdown::spawn_detached("subscriber", async move {
                if let Err(e) = worker.run(worker_stop).await {
                    let _ = failed.send((name, e));
                }
            });
            self.shared
                .metrics
                .subscriber_starts
                .get_or_create(&SubscriberLabels {
                    subscriber: sp.name().to_owned(),
                })
                .inc();
            self.running.insert(
                sp.name().to_owned(),
                Running {
                    built_from: built_from(plan, sp),
                    stop,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Stops `name`'s worker as at shutdown and waits for its drain.
    async fn stop_one(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            r.stop.cancel();
            let _ = r.task.await;
        }
        self.shared.control.remove(name);
    }

    fn build(
        &self,
        plan: &Plan,
        sp: &SubscriberPlan,
        handle: Arc<SubscriberHandle>,
    ) -> Result<Worker, DispatchError> {
        let cfg = &plan.config;
        let s = &sp.config;
        let shared = &self.shared;
        let sink = match &s.target {
            Target::Http(h) => Sink::Http(
                http_target::HttpSink::with_client(h, s.concurrency, &cfg.webhooks)
                    .map_err(|e| DispatchError::Target(s.name.clone(), e))?,
            ),
            Target::Topic(t) => Sink::Topic(TopicSink {
                producer: shared.producer.clone(),
                topic: t.topic.clone(),
            }),
        };
        let deliverer = Deliverer {
            subscriber: s.name.clone(),
            source_topics: s.topics.clone(),
            event_types: s.event_types.clone(),
            tags: s.tags.clone(),
            sink,
            retry_topics: sp.retry_topics.clone(),
            policy: sp.policy.clone(),
            max_attempts: s.max_attempts,
            dead_letter_topic: sp.dead_letter_topic.clone(),
            producer: shared.producer.clone(),
            metrics: shared.metrics.clone(),
            labels: SubscriberLabels {
                subscriber: s.name.clone(),
            },
            subscriber_name: Arc::from(s.name.as_str()),
            attempt_log: shared.attempt_log.clone(),
            stats: handle.stats.clone(),
            handle: handle.clone(),
            // Validation makes `ordering = "key"` need the database.
            ordered: match (s.ordering, &shared.control.pool) {
                (Ordering::Key, Some(pool)) => Some(OrderedKeys::new(pool.clone(), s.name.clone())),
                _ => None,
            },
        };
        let drain = Duration::from_millis(cfg.drain_timeout_ms);
        let ledger = Arc::new(Ledger::default());
        let consumer = cfg
            .kafka
            .consumer_config(&sp.group_id)
            .set("statistics.interval.ms", "5000")
            .create_with_context(GroupContext::new(GroupObserver::new(
                handle.clone(),
                &shared.metrics,
                ledger.clone(),
                drain,
            )))?;
        Ok(Worker {
            consumer: Arc::new(consumer),
            ledger,
            deliverer: Arc::new(deliverer),
            lanes: s.concurrency,
            drain,
            handle,
        })
    }
}

/// The derived topics of `subs` only.
fn derived_topics_of(
    plan: &Plan,
    subs: &[&SubscriberPlan],
) -> Vec<switchyard_runtime::topics::TopicSpec> {
    let mut only = plan.clone();
    only.subscribers
        .retain(|s| subs.iter().any(|o| o.name() == s.name()));
    only.derived_topics()
}

/// Everything a subscriber's worker is built from, as one comparable string.
fn built_from(plan: &Plan, sp: &SubscriberPlan) -> String {
    #[derive(Serialize)]
    struct BuiltFrom<'a> {
        config: &'a crate::config::SubscriberConfig,
        policy: &'a crate::config::RetryPolicy,
        group_id: &'a str,
        retry_topics: &'a [String],
        dead_letter_topic: &'a str,
        webhooks: &'a crate::config::WebhookClient,
        drain_timeout_ms: u64,
    }
    serde_json::to_string(&BuiltFrom {
        config: &sp.config,
        policy: &sp.policy,
        group_id: &sp.group_id,
        retry_topics: &sp.retry_topics,
        dead_letter_topic: &sp.dead_letter_topic,
        webhooks: &plan.config.webhooks,
        drain_timeout_ms: plan.config.drain_timeout_ms,
    })
    .unwrap_or_default()
}

/// Puts the running values of the settings only a restart applies into `new`, warning about
/// each one the file changed.
fn keep_restart_only_settings(old: &DispatcherConfig, new: &mut DispatcherConfig) {
    fn differ<T: Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
    }
    let mut changed = Vec::new();
    if differ(&old.listen, &new.listen) {
        changed.push("listen");
        new.listen = old.listen.clone();
    }
    if differ(&old.kafka, &new.kafka) {
        changed.push("kafka");
        new.kafka = old.kafka.clone();
    }
    if differ(&old.admin, &new.admin) {
        changed.push("admin");
        new.admin = old.admin.clone();
    }
    if differ(&old.attempt_log, &new.attempt_log) {
        changed.push("attempt_log");
        new.attempt_log = old.attempt_log.clone();
    }
    if differ(&old.builtin_sink_listen, &new.builtin_sink_listen) {
        changed.push("builtin_sink_listen");
        new.builtin_sink_listen = old.builtin_sink_listen.clone();
    }
    if !changed.is_empty() {
        tracing::warn!(
            keys = ?changed,
            "these settings changed in the config file and take effect only at the next restart"
        );
    }
}

/// The bytes of the config file and of the plan's integrations file; `None` if the config
/// file can't be read (mid-rewrite, say: the next tick looks again).
fn fingerprint(config_file: &std::path::Path, plan: &Plan) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(config_file).ok()?;
    bytes.push(0);
    if let Some(integrations) = &plan.integrations_file {
        bytes.extend(std::fs::read(integrations).unwrap_or_default());
    }
    Some(bytes)
}
