//! PostgreSQL plumbing shared by the dispatcher's admin store, deptrans, the outbox and the
//! idempotent consumer: the pool, migrations applied at start-up, once per schema, under an
//! advisory lock, and every advisory-lock id in one table.

pub use deadpool_postgres::Pool;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;

/// Every advisory-lock id the services take, in one table so two never collide. The values
/// are those the services used before they moved here: changing one would let an old and a
/// new instance hold "the same" lock at once during a rolling deploy.
pub mod lock {
    /// Dispatcher: migrations of schema `switchyard_admin` (attempt log, pauses).
    pub const ADMIN_MIGRATE: i64 = 0x7379_6164_0001;
    /// Idempotent consumer and outbox: migrations of a service's event tables.
    pub const EVENTS_MIGRATE: i64 = 0x7377_6576_0001;
    /// Outbox: one relay per schema at a time, so rows of one key never race to the broker.
    pub const OUTBOX_RELAY: i64 = 0x7377_6576_0002;
    /// deptrans: migrations of schema `deptrans`.
    pub const DEPTRANS_MIGRATE: i64 = 0x6465_7074_0001;
    /// deptrans: one instance at a time refreshes the KRT token.
    pub const DEPTRANS_TOKEN: i64 = 0x6465_7074_0002;
    /// deptrans: one instance at a time writes the driver-profiles feed.
    pub const DEPTRANS_PROFILES_FEED: i64 = 0x6465_7074_0003;
    /// deptrans: one instance at a time writes the status feed.
    pub const DEPTRANS_STATUS_FEED: i64 = 0x6465_7074_0004;
    /// talaria-proxy: migrations of schema `switchyard_proxy` (the shared replay store).
    pub const PROXY_MIGRATE: i64 = 0x7072_6f78_0001;
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("postgres pool setup: {0}")]
    Build(String),
    #[error("migration {version} ({name})")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// One migration: version, name, SQL.
pub type Migration = (i32, &'static str, &'static str);

/// A pool over `url`.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let pg: tokio_postgres::Config = url.parse()?;
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// Runs `sql` (an idempotent `CREATE ... IF NOT EXISTS` script) inside `schema`, which is
/// created when missing, in one transaction under advisory lock `lock`: for libraries whose
/// tables live in a schema the calling service names (idempotent consumer, outbox).
pub async fn apply_in_schema(
    client: &mut tokio_postgres::Client,
    schema: &str,
    lock: i64,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await?;
    let quoted = schema.replace('"', "\"\"");
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{quoted}\"; SET LOCAL search_path TO \"{quoted}\";"
    ))
    .await?;
    tx.batch_execute(sql).await?;
    tx.commit().await
}

/// Applies pending `migrations` of `schema` in one transaction under advisory lock `lock`, so
/// instances starting together neither race nor apply a migration twice. Returns how many
/// were applied; each is recorded in `<schema>.schema_migrations`.
pub async fn migrate(
    pool: &Pool,
    schema: &str,
    lock: i64,
    migrations: &[Migration],
) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let applied: Vec<i32> = tx
        .query(
            &format!("SELECT version FROM {schema}.schema_migrations"),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|source| DbError::Migration {
                version: *version,
                name,
                source,
            })?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[version, name],
        )
        .await?;
        tracing::info!(schema, version, name, "migration applied");
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}
