-- Idempotent consumers. Unqualified names: each service applies this in its own schema
-- (`switchyard_idempotent::migrate` sets the search_path), next to its own tables. The outbox
-- table, which used to be created here too, is `switchyard-outbox`'s migration now.

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
