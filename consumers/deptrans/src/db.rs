//! Postgres: the connection pool and the migrations applied at start-up.

use deadpool_postgres::Pool;

/// Advisory lock keys; one instance at a time migrates, refreshes the token, writes a feed.
/// The ids live in the workspace's one table, [`switchyard_runtime::pg::lock`].
pub mod lock {
    use switchyard_runtime::pg::lock as ids;

    pub const MIGRATE: i64 = ids::DEPTRANS_MIGRATE;
    pub const TOKEN: i64 = ids::DEPTRANS_TOKEN;
    pub const PROFILES_FEED: i64 = ids::DEPTRANS_PROFILES_FEED;
    pub const STATUS_FEED: i64 = ids::DEPTRANS_STATUS_FEED;
}

/// Migrations in order; each runs once, recorded in `deptrans.schema_migrations`.
pub const MIGRATIONS: &[switchyard_runtime::pg::Migration] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "status_trace",
        include_str!("../migrations/0002_status_trace.sql"),
    ),
    (
        3,
        "rejected",
        include_str!("../migrations/0003_rejected.sql"),
    ),
    (
        4,
        "sent_status",
        include_str!("../migrations/0004_sent_status.sql"),
    ),
    (
        5,
        "deferred",
        include_str!("../migrations/0005_deferred.sql"),
    ),
    (6, "history", include_str!("../migrations/0006_history.sql")),
];

pub use switchyard_runtime::pg::{pool, DbError};

/// Applies pending deptrans migrations (see [`switchyard_runtime::pg::migrate`]).
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    switchyard_runtime::pg::migrate(pool, "deptrans", lock::MIGRATE, MIGRATIONS).await
}
