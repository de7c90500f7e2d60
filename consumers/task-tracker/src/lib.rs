//! The reference example: a task tracker split into a user service, an accounting service and
//! a task board, built only from the idempotent consumer and the outbox.
//!
//! user service: registers users inactive and publishes `users.user_created.v1` through its
//! outbox; on `accounts.account_created.v1` it activates the user and publishes
//! `users.user_activated.v1`. accounting: on `user_created` opens one account and publishes
//! `account_created` through its outbox; `task_assigned` books one debit, `task_completed`
//! one credit. board: publishes `task_assigned` / `task_completed` through its outbox.
//!
//! Idempotency keys name the real-world fact, not the event type: an assignment is
//! `task_id + user_id + assigned_at`, so a reassigned task (to another user, or back to the same
//! one later) is a new debit, while the broker redelivering one assignment is not. A completion
//! is `task_id + user_id + completed_at` likewise. The ledger is the audit trail: each row keeps
//! the assign time and, for credits, the finish time.
//!
//! # Layout
//!
//! One module: [`Topics`] and [`types`], the services' tables (`*_SQL`, applied next to
//! `processed_events` and `outbox`), the handlers ([`user_service_handler`],
//! [`accounting_handler`]) and the writes that publish ([`register_user`], [`board_update`]).

use futures::FutureExt;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use switchyard_idempotent::{Event, EventsError, Handler};
use switchyard_outbox as outbox;

/// The three topics of the example (the registry in `deploy/events.toml` uses these names).
#[derive(Debug, Clone)]
pub struct Topics {
    pub users: String,
    pub accounts: String,
    pub tasks: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            users: "users".into(),
            accounts: "accounts".into(),
            tasks: "tasks".into(),
        }
    }
}

pub mod types {
    pub const USER_CREATED: &str = "users.user_created";
    pub const USER_ACTIVATED: &str = "users.user_activated";
    pub const ACCOUNT_CREATED: &str = "accounts.account_created";
    pub const TASK_ASSIGNED: &str = "tasks.task_assigned";
    pub const TASK_COMPLETED: &str = "tasks.task_completed";
}

/// Service tables, next to `processed_events` and `outbox` in each service's schema.
pub const USER_SERVICE_SQL: &str = "CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, role TEXT NOT NULL, active BOOLEAN NOT NULL DEFAULT false)";
/// The ledger is the audit trail: `assigned_at` on every row (a credit takes it from the
/// assignment it pays for, once that has been seen), `completed_at` on credits.
pub const ACCOUNTING_SQL: &str = "CREATE TABLE IF NOT EXISTS accounts (
        user_id TEXT PRIMARY KEY, account_id TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS ledger (
        id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, task_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('debit', 'credit')), event_id TEXT NOT NULL);
    ALTER TABLE ledger ADD COLUMN IF NOT EXISTS assigned_at TIMESTAMPTZ;
    ALTER TABLE ledger ADD COLUMN IF NOT EXISTS completed_at TIMESTAMPTZ";
pub const BOARD_SQL: &str = "CREATE TABLE IF NOT EXISTS tasks (
        task_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, state TEXT NOT NULL);
    ALTER TABLE tasks ADD COLUMN IF NOT EXISTS assigned_at TIMESTAMPTZ;
    ALTER TABLE tasks ADD COLUMN IF NOT EXISTS completed_at TIMESTAMPTZ";

/// A uuid field of the payload, as the canonical string the tables store.
fn uuid(event: &Event, field: &str) -> Result<String, EventsError> {
    Uuid::parse_str(event.str(field)?)
        .map(|u| u.to_string())
        .map_err(|e| EventsError::Handler(format!("{field}: {e}")))
}

fn key_of(event_type: &str, id: impl std::fmt::Display) -> String {
    format!("{event_type}:{id}")
}

/// The key of a task event: which task, whose, and when (see the crate doc).
fn task_key(event_type: &str, task_id: Uuid, user_id: Uuid, at: &str) -> String {
    format!("{event_type}:{task_id}:{user_id}:{at}")
}

/// user service: a new user, inactive, announced in the same transaction.
pub async fn register_user(
    client: &mut Client,
    topics: &Topics,
    user_id: Uuid,
    role: &str,
) -> Result<(), EventsError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO users (user_id, role) VALUES ($1, $2)",
        &[&user_id.to_string(), &role],
    )
    .await?;
    let payload = serde_json::json!({"user_id": user_id, "role": role, "active": false});
    let env = outbox::envelope(
        types::USER_CREATED,
        1,
        "task-tracker/users",
        key_of(types::USER_CREATED, user_id),
        &payload,
    );
    outbox::enqueue(&tx, &topics.users, &user_id.to_string(), &env).await?;
    tx.commit().await?;
    Ok(())
}

/// user service, on `account_created`: activate the user and announce it.
pub fn user_service_handler(topics: Topics) -> Handler {
    Box::new(move |tx, event| {
        let topics = topics.clone();
        async move {
            if event.envelope.event_type != types::ACCOUNT_CREATED {
                return Ok(());
            }
            let user_id = uuid(event, "user_id")?;
            let updated = tx
                .execute(
                    "UPDATE users SET active = true WHERE user_id = $1 AND NOT active",
                    &[&user_id],
                )
                .await?;
            if updated == 1 {
                let payload = serde_json::json!({"user_id": user_id});
                let env = outbox::envelope(
                    types::USER_ACTIVATED,
                    1,
                    "task-tracker/users",
                    key_of(types::USER_ACTIVATED, &user_id),
                    &payload,
                );
                outbox::enqueue(tx, &topics.users, &user_id.to_string(), &env).await?;
            }
            Ok(())
        }
        .boxed()
    })
}

/// accounting: accounts on `user_created`, ledger entries on task events.
pub fn accounting_handler(topics: Topics) -> Handler {
    Box::new(move |tx, event| {
        let topics = topics.clone();
        async move {
            match event.envelope.event_type.as_str() {
                types::USER_CREATED => open_account(tx, &topics, event).await,
                types::TASK_ASSIGNED => {
                    let (user_id, task_id) = (uuid(event, "user_id")?, uuid(event, "task_id")?);
                    let assigned_at = event.str("assigned_at")?;
                    tx.execute(
                        "INSERT INTO ledger (user_id, task_id, kind, event_id, assigned_at) \
                         VALUES ($1, $2, 'debit', $3, $4::text::timestamptz)",
                        &[&user_id, &task_id, &event.envelope.event_id, &assigned_at],
                    )
                    .await?;
                    Ok(())
                }
                types::TASK_COMPLETED => {
                    let (user_id, task_id) = (uuid(event, "user_id")?, uuid(event, "task_id")?);
                    let completed_at = event.str("completed_at")?;
                    // The assignment this completion pays for: the user's latest one before
                    // it, if accounting has seen it yet (events of one user are in order).
                    tx.execute(
                        "INSERT INTO ledger \
                           (user_id, task_id, kind, event_id, assigned_at, completed_at) \
                         SELECT $1, $2, 'credit', $3, \
                           (SELECT max(assigned_at) FROM ledger WHERE task_id = $2 \
                              AND user_id = $1 AND kind = 'debit' \
                              AND assigned_at <= $4::text::timestamptz), \
                           $4::text::timestamptz",
                        &[&user_id, &task_id, &event.envelope.event_id, &completed_at],
                    )
                    .await?;
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        .boxed()
    })
}

async fn open_account<C: GenericClient>(
    tx: &C,
    topics: &Topics,
    event: &Event,
) -> Result<(), EventsError> {
    let user_id = uuid(event, "user_id")?;
    let account_id = Uuid::now_v7().to_string();
    tx.execute(
        "INSERT INTO accounts (user_id, account_id) VALUES ($1, $2)",
        &[&user_id, &account_id],
    )
    .await?;
    let payload = serde_json::json!({"user_id": user_id, "account_id": account_id});
    let env = outbox::envelope(
        types::ACCOUNT_CREATED,
        1,
        "task-tracker/accounting",
        key_of(types::ACCOUNT_CREATED, &user_id),
        &payload,
    );
    outbox::enqueue(tx, &topics.accounts, &user_id.to_string(), &env).await?;
    Ok(())
}

/// board: assign (or reassign) or complete a task, announced in the same transaction.
pub async fn board_update(
    client: &mut Client,
    topics: &Topics,
    task_id: Uuid,
    user_id: Uuid,
    completed: bool,
) -> Result<(), EventsError> {
    let tx = client.transaction().await?;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (event_type, at_field) = if completed {
        tx.execute(
            "INSERT INTO tasks (task_id, user_id, state, completed_at) \
             VALUES ($1, $2, 'completed', $3::text::timestamptz) \
             ON CONFLICT (task_id) DO UPDATE SET state = EXCLUDED.state, \
               completed_at = EXCLUDED.completed_at",
            &[&task_id.to_string(), &user_id.to_string(), &at],
        )
        .await?;
        (types::TASK_COMPLETED, "completed_at")
    } else {
        tx.execute(
            "INSERT INTO tasks (task_id, user_id, state, assigned_at) \
             VALUES ($1, $2, 'assigned', $3::text::timestamptz) \
             ON CONFLICT (task_id) DO UPDATE SET user_id = EXCLUDED.user_id, \
               state = EXCLUDED.state, assigned_at = EXCLUDED.assigned_at, completed_at = NULL",
            &[&task_id.to_string(), &user_id.to_string(), &at],
        )
        .await?;
        (types::TASK_ASSIGNED, "assigned_at")
    };
    let mut payload = serde_json::json!({"task_id": task_id, "user_id": user_id});
    payload[at_field] = serde_json::Value::String(at.clone());
    let env = outbox::envelope(
        event_type,
        1,
        "task-tracker/board",
        task_key(event_type, task_id, user_id, &at),
        &payload,
    );
    outbox::enqueue(&tx, &topics.tasks, &user_id.to_string(), &env).await?;
    tx.commit().await?;
    Ok(())
}
