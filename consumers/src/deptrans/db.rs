//! Postgres: the connection pool and the migrations applied at start-up.

use deadpool_postgres::Pool;

/// Advisory lock keys; one instance at a time migrates, refreshes the token, writes a feed.
pub mod lock {
    pub const MIGRATE: i64 = 0x6465_7074_0001;
    pub const TOKEN: i64 = 0x6465_7074_0002;
    pub const PROFILES_FEED: i64 = 0x6465_7074_0003;
    pub const STATUS_FEED: i64 = 0x6465_7074_0004;
}

/// Migrations in order; each runs once, recorded in `deptrans.schema_migrations`.
pub const MIGRATIONS: &[crate::pg::Migration] = &[
    (
        1,
        "init",
        include_str!("../../migrations/deptrans/0001_init.sql"),
    ),
    (
        2,
        "status_trace",
        include_str!("../../migrations/deptrans/0002_status_trace.sql"),
    ),
];

pub use crate::pg::{pool, DbError};

/// Applies pending deptrans migrations (see [`crate::pg::migrate`]).
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    crate::pg::migrate(pool, "deptrans", lock::MIGRATE, MIGRATIONS).await
}
