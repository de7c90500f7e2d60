-- Idempotent consumers and the transactional outbox. Unqualified names: each service applies
-- this in its own schema (`idempotent::migrate` sets the search_path), next to its own tables.

-- One row per event a consumer has applied; inserted in the same transaction as the
-- consumer's own writes, so a redelivered event finds its row and has no second effect.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer        TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    event_id        TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    processed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, idempotency_key)
);

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
