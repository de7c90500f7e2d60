//! Postgres: the connection pool and the migrations applied at start-up.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Advisory lock keys; one instance at a time migrates, refreshes the token, writes a feed.
pub mod lock {
    pub const MIGRATE: i64 = 0x6465_7074_0001;
    pub const TOKEN: i64 = 0x6465_7074_0002;
    pub const PROFILES_FEED: i64 = 0x6465_7074_0003;
    pub const STATUS_FEED: i64 = 0x6465_7074_0004;
}

/// Migrations in order; each runs once, recorded in `deptrans.schema_migrations`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "init",
    include_str!("../../migrations/deptrans/0001_init.sql"),
)];

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

/// Applies pending migrations in one transaction under an advisory lock, so instances starting
/// together neither race nor apply a migration twice. Returns how many were applied.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::MIGRATE])
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS deptrans;
         CREATE TABLE IF NOT EXISTS deptrans.schema_migrations (
             version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM deptrans.schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
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
            "INSERT INTO deptrans.schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "migration applied");
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}
