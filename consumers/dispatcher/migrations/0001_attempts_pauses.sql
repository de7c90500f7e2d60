-- The attempt log: the last delivery attempts per subscriber, written in batches (binary COPY)
-- by the dispatcher and trimmed by its retention pass (count per subscriber and age).
-- UNLOGGED: a diagnostic log need not survive a PostgreSQL crash, and skipping the WAL halves
-- what each delivery costs the database. One index only, for the same reason; the age pass
-- scans, once a minute.
CREATE UNLOGGED TABLE switchyard_admin.attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscriber       text        NOT NULL,
    at               timestamptz NOT NULL,
    event_id         text        NOT NULL,
    attempt          int         NOT NULL,
    status           smallint,
    outcome          text        NOT NULL,
    latency_ms       int         NOT NULL,
    response_excerpt text,
    error            text
);
CREATE INDEX attempts_by_subscriber ON switchyard_admin.attempts (subscriber, id DESC);

-- Paused subscribers: every dispatcher replica polls this table, so a pause holds across
-- replicas and restarts.
CREATE TABLE switchyard_admin.paused_subscribers (
    subscriber text PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    paused_by  text NOT NULL DEFAULT 'admin-api'
);
