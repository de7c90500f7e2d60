//! The local three-node Kafka cluster (`deploy/local/kafka-cluster.sh`) as fault tests use it:
//! crash and restart nodes, find partition leaders and replicas, read topics back, heal.
//!
//! Every test of the cluster shares it, so they run one at a time: the nextest group
//! `kafka-cluster` (`.config/nextest.toml`) across processes, and a lock held by the handle
//! within one.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_runtime::KafkaSettings;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{unique, workspace_root};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(250);
/// The script waits up to 180 s for a node; this bounds the script itself.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

static EXCLUSIVE: LazyLock<Arc<Mutex<()>>> = LazyLock::new(Arc::default);

/// One partition as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    /// Node id of the leader; `-1` while there is none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A handle on the running cluster. Nodes it killed are started again by [`Cluster::heal`],
/// or by `Drop` when a test fails first, so the next test finds three live nodes.
pub struct Cluster {
    script: PathBuf,
    bootstrap: String,
    admin: Arc<AdminClient<DefaultClientContext>>,
    killed: BTreeSet<i32>,
    paused: BTreeSet<i32>,
    _exclusive: OwnedMutexGuard<()>,
}

impl Cluster {
    /// Starts every node that is not running (`kafka-cluster.sh up`) and waits until all
    /// three are brokers in the metadata.
    pub async fn start() -> anyhow::Result<Self> {
        switchyard_runtime::telemetry::init_tracing("test");
        let exclusive = EXCLUSIVE.clone().lock_owned().await;
        let script = workspace_root().join("deploy/local/kafka-cluster.sh");
        run_script(&script, &["up"]).await?;
        let bootstrap = run_script(&script, &["bootstrap"]).await?.trim().to_owned();
        let settings = settings_for(&bootstrap);
        let admin = Arc::new(settings.admin_config().create()?);
        let cluster = Self {
            script,
            bootstrap,
            admin,
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
            _exclusive: exclusive,
        };
        cluster
            .wait_brokers(3, Duration::from_secs(60))
            .await
            .context("cluster did not come up")?;
        Ok(cluster)
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Client settings pointing at the cluster (every node in the bootstrap list).
    pub fn kafka_settings(&self) -> KafkaSettings {
        settings_for(&self.bootstrap)
    }

    /// Crashes node `node` with SIGKILL.
    pub async fn kill(&mut self, node: i32) -> anyhow::Result<()> {
        tracing::info!(node, "killing kafka node");
        self.killed.insert(node);
        run_script(&self.script, &["kill", &node.to_string()]).await?;
        Ok(())
    }

    /// Starts node `node` again on its data and waits until it serves.
    pub async fn restart(&mut self, node: i32) -> anyhow::Result<()> {
        tracing::info!(node, "restarting kafka node");
        run_script(&self.script, &["start", &node.to_string()]).await?;
        self.killed.remove(&node);
        Ok(())
    }

    /// Freezes node `node` with SIGSTOP: a pause (a long GC, a stalled VM), not a crash.
    pub async fn pause(&mut self, node: i32) -> anyhow::Result<()> {
        tracing::info!(node, "pausing kafka node");
        self.paused.insert(node);
        run_script(&self.script, &["pause", &node.to_string()]).await?;
        Ok(())
    }

    /// Lets a paused node run again (SIGCONT).
    pub async fn resume(&mut self, node: i32) -> anyhow::Result<()> {
        tracing::info!(node, "resuming kafka node");
        run_script(&self.script, &["resume", &node.to_string()]).await?;
        self.paused.remove(&node);
        Ok(())
    }

    /// Resumes every node this handle paused, restarts every node it killed, and waits for
    /// three brokers.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        for node in self.paused.clone() {
            self.resume(node).await?;
        }
        for node in self.killed.clone() {
            self.restart(node).await?;
        }
        self.wait_brokers(3, Duration::from_secs(60)).await
    }

    /// Brokers the metadata lists: a crashed node leaves it once the controller fenced it.
    pub async fn brokers(&self) -> anyhow::Result<Vec<i32>> {
        let admin = self.admin.clone();
        tokio::task::spawn_blocking(move || {
            let md = admin.inner().fetch_metadata(None, METADATA_TIMEOUT)?;
            let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
            ids.sort_unstable();
            Ok(ids)
        })
        .await?
    }

    /// Waits until the metadata lists exactly `n` brokers.
    pub async fn wait_brokers(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.brokers().await.unwrap_or_default();
            if last.len() == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("expected {n} brokers within {within:?}, metadata lists {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Partitions of `topic` by id; an error when the topic does not exist.
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<Vec<PartitionInfo>> {
        let admin = self.admin.clone();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let md = admin
                .inner()
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .with_context(|| format!("topic {name} not in metadata"))?;
            if let Some(e) = t.error() {
                bail!("topic {name}: {e:?}");
            }
            let mut out: Vec<PartitionInfo> = t
                .partitions()
                .iter()
                .map(|p| PartitionInfo {
                    id: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                })
                .collect();
            out.sort_by_key(|p| p.id);
            Ok(out)
        })
        .await?
    }

    /// Waits until `topic` exists with a leader for every partition; returns its partitions.
    pub async fn wait_topic(
        &self,
        topic: &str,
        within: Duration,
    ) -> anyhow::Result<Vec<PartitionInfo>> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.partitions(topic).await;
            if let Ok(p) = &last {
                if !p.is_empty() && p.iter().all(|p| p.leader >= 0) {
                    return last;
                }
            }
            if Instant::now() > deadline {
                bail!("topic {topic} not ready after {within:?}: {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The node leading `topic`/`partition` now (`-1` while none does).
    pub async fn leader_of(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        self.partitions(topic)
            .await?
            .into_iter()
            .find(|p| p.id == partition)
            .map(|p| p.leader)
            .with_context(|| format!("{topic} has no partition {partition}"))
    }

    /// Crashes the current leader of `topic`/`partition` (as the metadata says) and returns it.
    pub async fn kill_leader(&mut self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        let leader = self.leader_of(topic, partition).await?;
        if leader < 0 {
            bail!("{topic}/{partition} has no leader to kill");
        }
        self.kill(leader).await?;
        Ok(leader)
    }

    /// Waits until a live node other than `old` leads `topic`/`partition`; returns it.
    pub async fn wait_new_leader(
        &self,
        topic: &str,
        partition: i32,
        old: i32,
        within: Duration,
    ) -> anyhow::Result<i32> {
        let deadline = Instant::now() + within;
        loop {
            let leader = self.leader_of(topic, partition).await.unwrap_or(-1);
            if leader >= 0 && leader != old {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("{topic}/{partition}: leader {leader} (was {old}) after {within:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every partition of `topic` has all its replicas in sync.
    pub async fn wait_in_sync(&self, topic: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.partitions(topic).await.unwrap_or_default();
            let in_sync = |p: &PartitionInfo| {
                p.replicas.len() == p.isr.len() && p.replicas.iter().all(|r| p.isr.contains(r))
            };
            if !last.is_empty() && last.iter().all(in_sync) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{topic} not fully in sync after {within:?}: {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The effective value of topic config `key` (broker defaults included).
    pub async fn topic_config(&self, topic: &str, key: &str) -> anyhow::Result<Option<String>> {
        let opts = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
        let spec = ResourceSpecifier::Topic(topic);
        let results = self.admin.describe_configs([&spec], &opts).await?;
        let resource = results
            .into_iter()
            .next()
            .context("no describe-configs result")?
            .map_err(|code| anyhow::anyhow!("describing {topic}: {code}"))?;
        Ok(resource.get(key).and_then(|e| e.value.clone()))
    }

    /// Every record of `topic`, read with a fresh consumer from the beginning of each partition
    /// up to its high watermark at the time of the call.
    pub async fn read_all(
        &self,
        topic: &str,
        within: Duration,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let partitions: Vec<i32> = self.partitions(topic).await?.iter().map(|p| p.id).collect();
        let consumer: BaseConsumer = self
            .kafka_settings()
            .consumer_config(&unique("cluster-reader"))
            .create()?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + within;
            // Next offset still to read, by partition; a partition is done at its high mark.
            let mut high = HashMap::new();
            let mut next = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                let (low, hw) = consumer.fetch_watermarks(&topic, p, METADATA_TIMEOUT)?;
                high.insert(p, hw);
                next.insert(p, low);
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            let mut out = Vec::new();
            while partitions.iter().any(|p| next[p] < high[p]) {
                if Instant::now() > deadline {
                    bail!("reading {topic}: next offsets {next:?}, high marks {high:?} after {within:?}");
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        next.insert(m.partition(), m.offset() + 1);
                        out.push(m.detach());
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, topic, "cluster reader"),
                    None => {}
                }
            }
            Ok(out)
        })
        .await?
    }

    /// Reads `topic` from the beginning until `done` holds over what was read, or `within`
    /// passes; returns what was read either way (the caller asserts).
    pub async fn read_until(
        &self,
        topic: &str,
        within: Duration,
        done: impl Fn(&[OwnedMessage]) -> bool,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let consumer: StreamConsumer = self
            .kafka_settings()
            .consumer_config(&unique("cluster-reader"))
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(topic).await? {
            tpl.add_partition_offset(topic, p.id, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while !done(&out) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => out.push(m.detach()),
                Ok(Err(e)) => tracing::warn!(error = %e, topic, "cluster reader"),
                Err(_) => break,
            }
        }
        Ok(out)
    }
}

impl Drop for Cluster {
    /// A test that failed before `heal` still leaves three live, running nodes behind.
    fn drop(&mut self) {
        for node in std::mem::take(&mut self.paused) {
            let status = std::process::Command::new(&self.script)
                .args(["resume", &node.to_string()])
                .stdin(Stdio::null())
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("kafka cluster: resuming node {node} failed: {status:?}");
            }
        }
        for node in std::mem::take(&mut self.killed) {
            let status = std::process::Command::new(&self.script)
                .args(["start", &node.to_string()])
                .stdin(Stdio::null())
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("kafka cluster: restarting node {node} failed: {status:?}");
            }
        }
    }
}

fn settings_for(bootstrap: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        client_id: "switchyard-cluster-test".into(),
        ..Default::default()
    }
}

/// Runs the cluster script; its stdout, or an error with its stderr.
async fn run_script(script: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        SCRIPT_TIMEOUT,
        tokio::process::Command::new(script)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| {
        format!(
            "{} {args:?} still running after {SCRIPT_TIMEOUT:?}",
            script.display()
        )
    })?
    .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {args:?}: {}\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
