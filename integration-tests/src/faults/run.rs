//! One fault run end to end on the three-node cluster: topics, recording subscribers, two
//! ingress and two dispatcher processes, the load driver, the seeded faults, the drain, the
//! checker's report and the search of the processes' logs for secrets.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use events::Envelope;
use rdkafka::Message;
use switchyard_runtime::topics::{ensure_topics, TopicSpec};
use tokio::sync::Mutex as AsyncMutex;

use super::checker::{check, Delivery, Report, Route};
use super::driver::{drive, AckLog, DriverConfig, DriverOutcome, Flow, DOMAIN_EVENT, SEEN_TAG};
use super::plan::{plan, Fault, Holds, Planned};
use super::procs::{bin, free_port, Proc};
use super::subscriber::{Mode, Recorder};
use crate::cluster::Cluster;
use crate::{dispatcher_config, http_subscriber, unique, workspace_root};

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Printed at the start; the same seed replays the same faults at the same times.
    pub seed: u64,
    pub events: u64,
    /// Offered events per second.
    pub rate: u64,
    /// Sequential callers per flow.
    pub keys: u64,
    pub faults: Vec<Fault>,
    pub holds: Holds,
    /// Bearer token for the ingress (`Authorization: Bearer`), once it requires one.
    pub bearer: Option<String>,
    /// How long to wait for every acknowledged event after the load and the faults are over.
    pub drain_timeout: Duration,
    /// Where configs and process logs go.
    pub dir: PathBuf,
}

impl RunConfig {
    /// The load's expected duration; faults start within its first 70%.
    pub fn load_time(&self) -> Duration {
        Duration::from_secs_f64(self.events as f64 / self.rate.max(1) as f64)
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct Injected {
    pub fault: Fault,
    pub victim: String,
    /// From the start of the load.
    pub started: Duration,
    pub ended: Duration,
}

/// Everything a run measured.
pub struct RunOutcome {
    pub seed: u64,
    pub report: Report,
    pub driver: DriverOutcome,
    pub injected: Vec<Injected>,
    /// Secrets found in a process log: (log file, what).
    pub leaked: Vec<(PathBuf, &'static str)>,
    pub logs: Vec<PathBuf>,
    pub elapsed: Duration,
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} (replay with this seed)", self.seed)?;
        for i in &self.injected {
            writeln!(
                f,
                "fault {:<16} {:<34} from {:>6.1}s to {:>6.1}s",
                i.fault.name(),
                i.victim,
                i.started.as_secs_f64(),
                i.ended.as_secs_f64()
            )?;
        }
        let d = &self.driver;
        writeln!(
            f,
            "driver: acknowledged {} in {:.1}s, retried {:?}, gave up {}, rejected {}",
            d.acks.len(),
            d.elapsed.as_secs_f64(),
            d.retries,
            d.gave_up,
            d.rejected.len()
        )?;
        for r in d.rejected.iter().take(5) {
            writeln!(f, "  rejected: {r}")?;
        }
        writeln!(f, "{}", self.report)?;
        write!(
            f,
            "secrets in {} process logs: {} found {:?}; run took {:.1}s",
            self.logs.len(),
            self.leaked.len(),
            self.leaked,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The fault targets, shared by the fault tasks.
struct Victims {
    cluster: AsyncMutex<Cluster>,
    ingress: Mutex<Vec<Proc>>,
    dispatchers: Mutex<Vec<Proc>>,
    subscriber: Recorder,
    topic: String,
}

const TOPIC_WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;

/// Runs `cfg` and returns what the checker found; the caller asserts.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.dir)?;
    let cluster = Cluster::start().await?;
    let mut kafka = cluster.kafka_settings();
    // Rides out a failover (broker session 6 s, then election) before answering 503.
    kafka.produce_timeout_ms = 10_000;

    let run_id = unique("faults");
    let topic = |flow: &str| format!("{run_id}.{flow}");
    let (uid_topic, marks_topic, status_topic, users_topic) = (
        topic("uid"),
        topic("marks"),
        topic("statuses"),
        topic("users"),
    );
    let specs: Vec<TopicSpec> = [&uid_topic, &marks_topic, &status_topic, &users_topic]
        .into_iter()
        .map(|t| {
            let mut s = TopicSpec::new(t, PARTITIONS);
            s.replication = 3;
            s.min_insync_replicas = Some(2);
            s
        })
        .collect();
    ensure_topics(&kafka, &specs).await?;
    for s in &specs {
        cluster.wait_topic(&s.name, TOPIC_WAIT).await?;
    }

    let secrets = Secrets::new(Some(
        cfg.bearer
            .clone()
            .unwrap_or_else(|| crate::TEST_INGRESS_TOKEN.to_owned()),
    ));
    let uid_sub = Recorder::start("uid").await?;
    let marks_sub = Recorder::start("marks").await?;
    let events_sub = Recorder::start("events").await?;

    // mark-notify integrations (read by both services) and the domain event registry.
    let integrations = cfg.dir.join("integrations.toml");
    std::fs::write(
        &integrations,
        format!(
            "[[integrations]]\ntag = \"{SEEN_TAG}\"\n\n[[integrations.targets]]\nname = \"rec\"\n\
             concurrency = 8\n\n[integrations.targets.target]\nkind = \"http\"\nurl = \"{}\"\n\
             timeout_ms = 2000\nsecret = \"{}\"\n",
            marks_sub.url(),
            secrets.webhook
        ),
    )?;
    let registry = cfg.dir.join("events.toml");
    std::fs::write(
        &registry,
        format!(
            "schemas_dir = \"{}\"\n\n[[events]]\ntype = \"{DOMAIN_EVENT}\"\nversion = 1\n\
             topic = \"{users_topic}\"\nkey = \"user_id\"\n",
            workspace_root().join("schemas/events").display()
        ),
    )?;

    let mut ingress_cfg = switchyard_ingress::IngressConfig {
        kafka: kafka.clone(),
        ..Default::default()
    };
    ingress_cfg.uid_notify.topic.clone_from(&uid_topic);
    ingress_cfg.driver_status.topic.clone_from(&status_topic);
    ingress_cfg.mark_notify.topic.clone_from(&marks_topic);
    // The ingress authenticates its callers: the driver presents `bearer`.
    let bearer = cfg
        .bearer
        .clone()
        .unwrap_or_else(|| crate::TEST_INGRESS_TOKEN.to_owned());
    ingress_cfg.auth.callers = vec![crate::ingress_caller("faults", &bearer, &["*"], true)];
    ingress_cfg.domain_events.registry_file = Some(registry);
    let mut ingress = Vec::new();
    let mut ingress_urls = Vec::new();
    for n in 0..2 {
        let port = free_port()?;
        ingress_cfg.listen = format!("127.0.0.1:{port}");
        let file = cfg.dir.join(format!("ingress-{n}.toml"));
        std::fs::write(&file, toml::to_string(&ingress_cfg)?)?;
        ingress.push(Proc::start(
            &format!("ingress-{n}"),
            bin("switchyard-ingress"),
            file,
            &cfg.dir,
        )?);
        ingress_urls.push(format!("http://127.0.0.1:{port}"));
    }

    let signed = |name: &str, topic: &str, url: &str| {
        let mut s = http_subscriber(name, topic, url);
        if let switchyard_dispatcher::config::Target::Http(h) = &mut s.target {
            h.secret = Some(secrets.webhook.clone());
        }
        s
    };
    let mut dcfg = dispatcher_config(vec![
        signed("uid", &uid_topic, &uid_sub.url()),
        signed("events", &users_topic, &events_sub.url()),
    ]);
    dcfg.kafka = kafka.clone();
    dcfg.listen = "127.0.0.1:0".into();
    dcfg.retry.tiers_ms = vec![1_000, 3_000];
    dcfg.retry.max_in_process_retry_after_ms = 3_000;
    dcfg.admin.token = Some(secrets.admin.clone());
    dcfg.mark_notify = Some(switchyard_dispatcher::config::MarkNotifySection {
        topic: marks_topic.clone(),
        integrations_file: integrations,
    });
    let dfile = cfg.dir.join("dispatcher.toml");
    std::fs::write(&dfile, toml::to_string(&dcfg)?)?;
    let mut dispatchers = Vec::new();
    for n in 0..2 {
        dispatchers.push(Proc::start(
            &format!("dispatcher-{n}"),
            bin("switchyard-dispatcher"),
            dfile.clone(),
            &cfg.dir,
        )?);
    }
    for url in &ingress_urls {
        wait_ready(url, Duration::from_secs(60)).await?;
    }

    let logs: Vec<PathBuf> = ingress
        .iter()
        .chain(&dispatchers)
        .map(|p| p.log.clone())
        .collect();
    let victims = Arc::new(Victims {
        cluster: AsyncMutex::new(cluster),
        ingress: Mutex::new(ingress),
        dispatchers: Mutex::new(dispatchers),
        subscriber: uid_sub.clone(),
        topic: uid_topic.clone(),
    });

    let driver_cfg = DriverConfig {
        ingress: ingress_urls,
        bearer: Some(bearer),
        events: cfg.events,
        flows: Flow::ALL.to_vec(),
        keys: cfg.keys,
        rate: cfg.rate,
        request_timeout: Duration::from_secs(15),
        give_up_after: Duration::from_secs(120),
        run_id: run_id.clone(),
        phone_id: secrets.phone_id.clone(),
    };
    let window = cfg.load_time().mul_f64(0.7);
    let planned = plan(cfg.seed, &cfg.faults, window, &cfg.holds);
    tracing::info!(seed = cfg.seed, ?planned, "fault plan");
    let load_start = Instant::now();
    let log = AckLog::default();
    let faults = planned
        .into_iter()
        .map(|p| tokio::spawn(inject(victims.clone(), p, load_start)));
    let faults = futures::future::join_all(faults);
    let (driven, injected) = tokio::join!(drive(&driver_cfg, &log), faults);
    let driver = driven?;
    let mut done = Vec::new();
    for i in injected {
        done.push(i.context("fault task panicked")??);
    }
    done.sort_by_key(|i| i.started);
    // Drain is measured from when both the faults and the load were over.
    let last_ack = driver.acks.iter().map(|a| a.at).max();
    let faults_over = done
        .iter()
        .map(|i| load_start + i.ended)
        .max()
        .max(last_ack);

    let routes = vec![
        route("uid", Flow::UidNotify),
        route("marks", Flow::MarkSeen),
        route("events", Flow::DomainEvent),
        route("topic:statuses", Flow::DriverStatus),
    ];
    let subscribers = [&uid_sub, &marks_sub, &events_sub];
    let http_logs = || -> Vec<Delivery> { subscribers.iter().flat_map(|s| s.log()).collect() };
    let deadline = Instant::now() + cfg.drain_timeout;
    loop {
        let r = check(&driver.acks, &http_logs(), &routes[..3], faults_over);
        if r.lost() == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut all = http_logs();
    {
        let cluster = victims.cluster.lock().await;
        for m in cluster.read_all(&status_topic, TOPIC_WAIT).await? {
            let env = m.payload().and_then(|p| Envelope::from_bytes(p).ok());
            all.push(Delivery {
                sink: "topic:statuses".into(),
                event_id: env.as_ref().map(|e| e.event_id.clone()).unwrap_or_default(),
                token: env.map(|e| e.idempotency_key),
                status: 200,
                at: None,
            });
        }
    }
    let report = check(&driver.acks, &all, &routes, faults_over);
    dump(&cfg.dir, load_start, &driver, &all)?;

    {
        let mut procs =
            std::mem::take(&mut *victims.ingress.lock().unwrap_or_else(|e| e.into_inner()));
        procs.append(
            &mut victims
                .dispatchers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for p in &mut procs {
            p.stop(Duration::from_secs(10));
        }
    }
    victims.cluster.lock().await.heal().await?;
    let leaked = secrets.search(&logs)?;
    Ok(RunOutcome {
        seed: cfg.seed,
        report,
        driver,
        injected: done,
        leaked,
        logs,
        elapsed: started.elapsed(),
    })
}

/// The ground-truth log and every delivery as JSON lines (`acks.jsonl`, `deliveries.jsonl`,
/// times in ms from the start of the load), for a look at what the report counts.
fn dump(
    dir: &std::path::Path,
    start: Instant,
    driver: &DriverOutcome,
    all: &[Delivery],
) -> anyhow::Result<()> {
    use std::io::Write;
    let ms = |t: Instant| t.saturating_duration_since(start).as_millis();
    let mut acks = std::io::BufWriter::new(std::fs::File::create(dir.join("acks.jsonl"))?);
    for a in &driver.acks {
        let line = serde_json::json!({
            "event_id": a.event_id, "flow": a.flow, "key": a.key, "seq": a.seq, "at_ms": ms(a.at),
        });
        writeln!(acks, "{line}")?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("deliveries.jsonl"))?);
    for d in all {
        let line = serde_json::json!({
            "sink": d.sink, "event_id": d.event_id, "token": d.token, "status": d.status,
            "at_ms": d.at.map(ms),
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn route(sink: &str, flow: Flow) -> Route {
    Route {
        sink: sink.into(),
        flow: flow.name().into(),
        ordered: true,
    }
}

/// Injects one planned fault at its time, holds it, and ends it.
async fn inject(v: Arc<Victims>, p: Planned, load_start: Instant) -> anyhow::Result<Injected> {
    tokio::time::sleep_until((load_start + p.at).into()).await;
    let mut started = load_start.elapsed();
    let victim = match p.fault {
        Fault::LeaderKill => {
            // Broker faults hold the cluster: never two nodes out at once (a broker fault
            // starts when the one before it is over).
            let mut c = v.cluster.lock().await;
            started = load_start.elapsed();
            let partition = i32::try_from(p.pick % PARTITIONS as u32).unwrap_or(0);
            let node = c.kill_leader(&v.topic, partition).await?;
            tokio::time::sleep(p.hold).await;
            c.restart(node).await?;
            format!("node {node} (leader of uid/{partition})")
        }
        Fault::BrokerPause => {
            let mut c = v.cluster.lock().await;
            started = load_start.elapsed();
            let node = i32::try_from(1 + p.pick % 3).unwrap_or(1);
            c.pause(node).await?;
            tokio::time::sleep(p.hold).await;
            c.resume(node).await?;
            format!("node {node}")
        }
        Fault::IngressKill => kill_process(&v.ingress, p.pick, p.hold).await?,
        Fault::DispatcherKill => kill_process(&v.dispatchers, p.pick, p.hold).await?,
        Fault::SubscriberDown => {
            v.subscriber.set_mode(Mode::Down).await?;
            tokio::time::sleep(p.hold).await;
            v.subscriber.set_mode(Mode::Ok).await?;
            format!("subscriber {}", v.subscriber.name())
        }
        Fault::Subscriber503 => {
            v.subscriber
                .set_mode(Mode::Throttle {
                    status: 503,
                    retry_after_s: 2,
                })
                .await?;
            tokio::time::sleep(p.hold).await;
            v.subscriber.set_mode(Mode::Ok).await?;
            format!("subscriber {} (Retry-After: 2)", v.subscriber.name())
        }
        Fault::SubscriberStall => {
            v.subscriber
                .set_mode(Mode::Stall(Duration::from_secs(3)))
                .await?;
            tokio::time::sleep(p.hold).await;
            v.subscriber.set_mode(Mode::Ok).await?;
            format!("subscriber {} (3 s per answer)", v.subscriber.name())
        }
    };
    tracing::info!(fault = %p.fault, victim, "fault over");
    Ok(Injected {
        fault: p.fault,
        victim,
        started,
        ended: load_start.elapsed(),
    })
}

async fn kill_process(
    procs: &Mutex<Vec<Proc>>,
    pick: u32,
    hold: Duration,
) -> anyhow::Result<String> {
    let name = {
        let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
        let n = procs.len().max(1);
        let p = &mut procs[pick as usize % n];
        p.kill9()?;
        p.name.clone()
    };
    tokio::time::sleep(hold).await;
    let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
    let p = procs
        .iter_mut()
        .find(|p| p.name == name)
        .context("process vanished")?;
    p.spawn()?;
    Ok(name)
}

async fn wait_ready(base: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let ok = client
            .get(format!("{base}/ready"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{base} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The secrets a run hands to the processes; none may appear in their logs.
struct Secrets {
    webhook: String,
    admin: String,
    phone_id: String,
    bearer: Option<String>,
}

impl Secrets {
    fn new(bearer: Option<String>) -> Self {
        let r = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            webhook: format!("whsec-fault-{}", r()),
            admin: format!("admin-fault-{}", r()),
            phone_id: format!("phone-fault-{}", r()),
            bearer,
        }
    }

    /// Every (log, secret) where the secret's text appears in the log.
    fn search(&self, logs: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, &'static str)>> {
        let mut named: Vec<(&'static str, &str)> = vec![
            ("webhook secret", &self.webhook),
            ("admin token", &self.admin),
            ("phone id", &self.phone_id),
        ];
        if let Some(b) = &self.bearer {
            named.push(("bearer token", b));
        }
        let mut found = Vec::new();
        for log in logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for (what, secret) in &named {
                if text.contains(secret) {
                    found.push((log.clone(), *what));
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_search_finds_a_leak() {
        let s = Secrets::new(Some("bearer-xyz".into()));
        let dir = std::env::temp_dir().join(unique("secrets"));
        std::fs::create_dir_all(&dir).unwrap();
        let clean = dir.join("clean.log");
        let leaky = dir.join("leaky.log");
        std::fs::write(&clean, "INFO delivered event_id=e1 subscriber=uid\n").unwrap();
        std::fs::write(
            &leaky,
            format!(
                "WARN request failed token={} phone={}\n",
                s.admin, s.phone_id
            ),
        )
        .unwrap();
        let found = s.search(&[clean, leaky.clone()]).unwrap();
        assert_eq!(
            found,
            vec![(leaky.clone(), "admin token"), (leaky, "phone id")]
        );
    }
}
