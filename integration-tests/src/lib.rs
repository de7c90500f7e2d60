//! Test harness: starts switchyard services in-process on port 0 against the real broker and
//! PostgreSQL, plays subscribers with real HTTP servers, and reads topics back.

// Test and benchmark plumbing starts servers and clients directly; the clippy.toml bans guard
// service code.
#![allow(clippy::disallowed_methods)]

pub mod cluster;
pub mod cut;
pub mod deptrans_fakes;
pub mod fake_http;
pub mod faults;
pub mod kafka;
pub mod load;
pub mod log_scan;
pub mod private_pg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use switchyard_runtime::{KafkaSettings, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Bootstrap servers of the test Kafka (`deploy/local/kafka.sh` starts it; `deploy/local/lib.sh`
/// sets `SWITCHYARD_TEST_BOOTSTRAP` from `SWITCHYARD_BOOTSTRAP_SERVERS`).
pub fn bootstrap() -> String {
    std::env::var("SWITCHYARD_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap(),
        ..Default::default()
    }
}

/// A uid-notify bind of `portal_uid` to `portal_uid + 1` from `source`, as the ingress
/// publishes it: the record the dispatcher tests and benches fill topics with.
pub fn bind_envelope(portal_uid: u64, source: &str) -> events::Envelope {
    use events::v1::{envelope::Payload, AccountLink, LinkEvent};
    let link = AccountLink {
        portal_uid,
        phonish_uid: portal_uid + 1,
        event: LinkEvent::Bind.into(),
    };
    events::Envelope::new(
        events::event_type::UID_BIND,
        1,
        chrono::Utc::now(),
        source,
        link.idempotency_key(),
        Payload::AccountLink(link),
    )
}

/// A name no other test (or earlier run) uses: topics, groups, schemas.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = chrono::Utc::now().timestamp_millis() % 100_000_000;
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A service running in-process until stopped.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    join: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop: trigger shutdown and wait for the service to drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.join.await?
    }
}

pub async fn start_ingress(
    config: switchyard_ingress::IngressConfig,
    config_file: Option<PathBuf>,
) -> anyhow::Result<Running> {
    switchyard_runtime::telemetry::init_tracing("test");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let publisher = switchyard_ingress::Publisher::kafka(&config.kafka, "test-ingress")?;
    let state = switchyard_ingress::AppState::new(config, publisher)?;
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let join = tokio::spawn(async move {
        switchyard_ingress::run(state, config_file, listener, s).await;
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        join,
    })
}

pub async fn start_dispatcher(
    config: switchyard_dispatcher::DispatcherConfig,
) -> anyhow::Result<Running> {
    start_dispatcher_watching(config, None).await
}

/// A dispatcher that watches `config_file` (which `config` was loaded from) for changes.
pub async fn start_dispatcher_watching(
    config: switchyard_dispatcher::DispatcherConfig,
    config_file: Option<PathBuf>,
) -> anyhow::Result<Running> {
    switchyard_runtime::telemetry::init_tracing("test");
    config.validate()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let join = tokio::spawn(async move {
        switchyard_dispatcher::run(config, config_file, listener, s).await?;
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        join,
    })
}

/// The token of the harness's ingress caller `test` (every route, trusted identity headers):
/// what [`ingress_client`] sends.
pub const TEST_INGRESS_TOKEN: &str = "test-ingress-token-every-route";

/// An ingress caller named `name` whose token is `token`, allowed `routes`.
pub fn ingress_caller(
    name: &str,
    token: &str,
    routes: &[&str],
    trusted_identity_headers: bool,
) -> switchyard_ingress::auth::CallerConfig {
    let hash = switchyard_ingress::auth::sha256(token.as_bytes());
    switchyard_ingress::auth::CallerConfig {
        name: name.to_owned(),
        token_sha256: Some(hash.iter().map(|b| format!("{b:02x}")).collect()),
        token_file: None,
        client_cn: None,
        routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        trusted_identity_headers,
    }
}

/// An ingress caller named `name` by its client certificate's common name `cn` (mTLS), allowed
/// `routes`.
pub fn ingress_cert_caller(
    name: &str,
    cn: &str,
    routes: &[&str],
) -> switchyard_ingress::auth::CallerConfig {
    switchyard_ingress::auth::CallerConfig {
        name: name.to_owned(),
        token_sha256: None,
        token_file: None,
        client_cn: Some(cn.to_owned()),
        routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        trusted_identity_headers: false,
    }
}

/// An HTTP client that presents [`TEST_INGRESS_TOKEN`] (`Authorization: Bearer`) on every
/// request; a request's own `Authorization` header wins.
pub fn ingress_client() -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(ingress_auth_headers())
        .build()
        .expect("http client")
}

/// `Authorization: Bearer <TEST_INGRESS_TOKEN>`, for clients of the harness's ingress.
pub fn ingress_auth_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {TEST_INGRESS_TOKEN}");
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&value).expect("header value"),
    );
    headers
}

/// Ingress config pointing at the test broker and `topic`, with one caller `test` that may use
/// every route and is trusted with identity headers (its token: [`TEST_INGRESS_TOKEN`]).
pub fn ingress_config(topic: &str) -> switchyard_ingress::IngressConfig {
    let mut cfg = switchyard_ingress::IngressConfig {
        kafka: kafka_settings(),
        ..Default::default()
    };
    cfg.uid_notify.topic = topic.to_owned();
    cfg.auth.callers = vec![ingress_caller("test", TEST_INGRESS_TOKEN, &["*"], true)];
    cfg
}

/// Dispatcher config with unique group/topic prefixes and short retry tiers for tests.
pub fn dispatcher_config(
    subscribers: Vec<switchyard_dispatcher::config::SubscriberConfig>,
) -> switchyard_dispatcher::DispatcherConfig {
    let prefix = unique("sy");
    switchyard_dispatcher::DispatcherConfig {
        kafka: kafka_settings(),
        group_prefix: format!("{prefix}.g."),
        topic_prefix: format!("{prefix}."),
        retry_partitions: 2,
        drain_timeout_ms: 5_000,
        retry: switchyard_dispatcher::config::RetryPolicy {
            in_process_attempts: 2,
            initial_backoff_ms: 20,
            max_backoff_ms: 100,
            tiers_ms: vec![300, 600],
            max_in_process_retry_after_ms: 1_000,
        },
        subscribers,
        ..Default::default()
    }
}

/// An HTTP subscriber of `topic` posting to `url`.
pub fn http_subscriber(
    name: &str,
    topic: &str,
    url: &str,
) -> switchyard_dispatcher::config::SubscriberConfig {
    switchyard_dispatcher::config::SubscriberConfig {
        name: name.to_owned(),
        topics: vec![topic.to_owned()],
        event_types: Vec::new(),
        tags: Vec::new(),
        target: switchyard_dispatcher::config::Target::Http(
            switchyard_dispatcher::config::HttpTarget {
                url: url.to_owned(),
                timeout_ms: 2_000,
                headers: Default::default(),
                secret: None,
                secrets: Vec::new(),
            },
        ),
        max_attempts: None,
        concurrency: 8,
        max_per_second: None,
        max_in_flight: None,
        retry: None,
        paused: false,
        breaker: Default::default(),
        ordering: Default::default(),
    }
}

/// A new, empty PostgreSQL database named after `prefix`; returns its URL.
pub async fn fresh_database(prefix: &str) -> anyhow::Result<String> {
    let base = std::env::var("SWITCHYARD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into());
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(format!("{base}/{name}"))
}

/// Attempt log settings for tests: a fresh database, flushed every 50 ms.
pub async fn attempt_log_config() -> anyhow::Result<switchyard_dispatcher::config::AttemptLogConfig>
{
    Ok(switchyard_dispatcher::config::AttemptLogConfig {
        database_url: fresh_database("switchyard_admin_test").await?,
        keep_per_subscriber: 1_000,
        retention_hours: 72,
        batch_size: 500,
        flush_interval_ms: 50,
        buffer: 10_000,
    })
}

/// A binary of the workspace next to the running test executable
/// (`<target>/<profile>/deps/<test>` -> `<target>/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("target dir")
}
