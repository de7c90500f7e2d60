//! Where the `jti`s of used callback tokens are remembered until the tokens expire: in this
//! process (the default), or in PostgreSQL (`[replay_store]`), shared by every replica, so a
//! token replayed to another replica is refused there too.
//!
//! The shared store fails closed: while the database cannot answer, callbacks get 503
//! `replay_store_unavailable` (the partner retries) rather than pass unchecked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use switchyard_runtime::pg::{self, Migration, Pool};
use switchyard_runtime::shutdown::every;
use switchyard_runtime::Shutdown;

use crate::config::{read_secret, InvalidConfig, ReplayStoreConfig};
use crate::error::ProxyError;

/// Most callback tokens one process remembers at once per backend (local memory only). Past
/// this it refuses new tokens (503) rather than forget one that could then be replayed.
pub(crate) const REPLAY_CAPACITY: u64 = 100_000;

/// The shared store's schema, and its migrations in order.
const SCHEMA: &str = "switchyard_proxy";
const MIGRATIONS: &[Migration] = &[(
    1,
    "seen_jti",
    include_str!("../migrations/0001_seen_jti.sql"),
)];

/// Expired rows are deleted this often.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The `jti`s one callback backend has seen.
pub(crate) enum Seen {
    /// This process only: `jti` -> unix second it may be forgotten at.
    Local(Cache<String, u64>),
    /// The shared store, under the backend's tag.
    Shared {
        scope: String,
        store: Arc<SharedStore>,
    },
}

impl Seen {
    /// The shared store under `scope` (the backend's tag) when one is configured, else this
    /// process's memory.
    pub(crate) fn new(scope: &str, store: Option<&Arc<SharedStore>>) -> Self {
        match store {
            Some(store) => Self::Shared {
                scope: scope.to_owned(),
                store: store.clone(),
            },
            None => Self::local(),
        }
    }

    pub(crate) fn local() -> Self {
        // Room above REPLAY_CAPACITY so moka never evicts a live entry before `first_use`
        // starts refusing.
        Self::Local(
            Cache::builder()
                .max_capacity(REPLAY_CAPACITY * 2)
                .expire_after(UntilExpiry)
                .build(),
        )
    }

    /// Records `jti` as used until `until` (unix seconds): `Ok(true)` the first time, `Ok(false)`
    /// for a replay. Concurrent first uses of one `jti` let exactly one through.
    pub(crate) async fn first_use(&self, jti: &str, until: u64) -> Result<bool, ProxyError> {
        match self {
            Self::Local(seen) => {
                if seen.entry_count() >= REPLAY_CAPACITY {
                    seen.run_pending_tasks().await;
                    if seen.entry_count() >= REPLAY_CAPACITY {
                        return Err(ProxyError::ReplayCacheFull);
                    }
                }
                // `or_insert_with`, not `or_insert`: moka coalesces concurrent inits of one
                // key so exactly one caller sees a fresh entry; `or_insert` is a get then an
                // insert, and two workers racing the same token both passed (moka-rs/moka#545).
                let entry = seen
                    .entry_by_ref(jti)
                    .or_insert_with(std::future::ready(until))
                    .await;
                Ok(entry.is_fresh())
            }
            Self::Shared { scope, store } => store.first_use(scope, jti, until).await,
        }
    }
}

/// Keeps a seen `jti` until the unix second stored with it (its `exp` plus the leeway).
struct UntilExpiry;

impl Expiry<String, u64> for UntilExpiry {
    fn expire_after_create(&self, _jti: &String, until: &u64, _at: Instant) -> Option<Duration> {
        Some(Duration::from_secs(until.saturating_sub(unix_now()).max(1)))
    }
}

/// The table every replica records used `jti`s in.
pub(crate) struct SharedStore {
    pool: Pool,
    timeout: Duration,
    /// Set once the migrations ran; until then every callback is a 503.
    ready: AtomicBool,
}

impl SharedStore {
    /// The pool only: nothing connects until [`maintain`](Self::maintain) or a callback does.
    pub(crate) fn new(cfg: &ReplayStoreConfig) -> Result<Arc<Self>, InvalidConfig> {
        let key = "replay_store.database_url";
        let url = read_secret(
            key,
            cfg.database_url.as_ref(),
            cfg.database_url_file.as_deref(),
        )?;
        let url = String::from_utf8(url).map_err(|_| InvalidConfig::key(key, "not UTF-8"))?;
        let pool = pg::pool(&url, cfg.pool_size.max(1))
            .map_err(|e| InvalidConfig::key(key, e.to_string()))?;
        Ok(Arc::new(Self {
            pool,
            timeout: Duration::from_millis(cfg.timeout_ms),
            ready: AtomicBool::new(false),
        }))
    }

    /// Applies the migrations (retrying every few seconds while the database is away), then
    /// deletes expired rows every minute, until `shutdown`.
    pub(crate) async fn maintain(self: Arc<Self>, shutdown: Shutdown) {
        let mut wait = Duration::from_millis(200);
        while !shutdown.is_triggered() {
            match pg::migrate(&self.pool, SCHEMA, pg::lock::PROXY_MIGRATE, MIGRATIONS).await {
                Ok(_) => {
                    self.ready.store(true, Ordering::Release);
                    tracing::info!("replay store ready");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replay store: migrations failed; callbacks get 503 until they pass");
                    tokio::select! {
                        _ = shutdown.triggered() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        every(PURGE_EVERY, &shutdown.token(), || async {
            if let Err(e) = self.purge().await {
                tracing::warn!(error = %e, "replay store: deleting expired rows failed");
            }
        })
        .await;
    }

    async fn purge(&self) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let client = self.pool.get().await?;
        static PURGE: LazyLock<String> =
            LazyLock::new(|| format!("DELETE FROM {SCHEMA}.seen_jti WHERE until_unix < $1"));
        Ok(client.execute(PURGE.as_str(), &[&now_i64()]).await?)
    }

    async fn first_use(&self, scope: &str, jti: &str, until: u64) -> Result<bool, ProxyError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(ProxyError::ReplayStoreUnavailable(
                "not migrated yet".into(),
            ));
        }
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        // A row left by an expired token with the same id (not purged yet) is taken over;
        // a live one is not, so the row count says whether this use is the first.
        static FIRST_USE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "INSERT INTO {SCHEMA}.seen_jti (scope, jti, until_unix) VALUES ($1, $2, $3)
                 ON CONFLICT (scope, jti) DO UPDATE SET until_unix = EXCLUDED.until_unix
                 WHERE seen_jti.until_unix < $4"
            )
        });
        let insert = async {
            let client = self.pool.get().await.map_err(unavailable)?;
            client
                .execute(FIRST_USE.as_str(), &[&scope, &jti, &until, &now_i64()])
                .await
                .map_err(unavailable)
        };
        let rows = tokio::time::timeout(self.timeout, insert)
            .await
            .map_err(|_| ProxyError::ReplayStoreUnavailable("timed out".into()))??;
        Ok(rows == 1)
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> ProxyError {
    ProxyError::ReplayStoreUnavailable(Box::new(e))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}
