-- The transactional outbox. Unqualified names: each service applies this in its own schema
-- (`switchyard_outbox::migrate` sets the search_path), next to its own tables. Until the crate
-- split this was the second half of the idempotent consumer's migration; both are idempotent,
-- so a schema migrated by the old combined file is already up to date.

-- Events to publish, written in the same transaction as the state change they announce.
-- The relay publishes unsent rows in id order (hence in order per key) and sets sent_at.
CREATE TABLE IF NOT EXISTS outbox (
    id          BIGSERIAL   PRIMARY KEY,
    topic       TEXT        NOT NULL,
    record_key  TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    envelope    BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
