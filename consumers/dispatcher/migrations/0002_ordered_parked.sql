-- Ordered mode (`ordering = "key"`): every record of an ordered subscriber that waits in a retry
-- tier, by where it was first read. A record is attempted only when no earlier record of its
-- key (same subscriber, source topic and partition) is still here; its row goes once it is
-- delivered or dead-lettered. Every replica reads this table, so the order holds across a
-- crash and a rebalance. Logged (unlike the attempt log): losing it would break the order.
CREATE TABLE switchyard_admin.ordered_parked (
    subscriber       text        NOT NULL,
    origin_topic     text        NOT NULL,
    origin_partition int         NOT NULL,
    key              bytea       NOT NULL,
    origin_offset    bigint      NOT NULL,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, origin_topic, origin_partition, key, origin_offset)
);
