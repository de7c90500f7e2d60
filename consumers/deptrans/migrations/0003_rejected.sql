-- Statuses KRT refused for good (or that could never be sent), out of the queue so they cost the
-- others nothing. One row per driver: the latest refused status. Listed and re-queued through
-- the internal API (/internal/v1/rejected).
CREATE TABLE deptrans.rejected (
    park_id     text        NOT NULL,
    driver_id   text        NOT NULL,
    status      text        NOT NULL,
    -- The status time (the queue row's updated_at).
    status_at   timestamptz NOT NULL,
    traceparent text,
    -- krt_refused, krt_rejected, krt_malformed, no_licence, unknown_driver.
    reason      text        NOT NULL,
    -- KRT's HTTP status when it refused the request (NULL: a per-row answer or no KRT call).
    krt_status  integer,
    -- The start of KRT's answer, personal data redacted.
    krt_answer  text        NOT NULL,
    rejected_at timestamptz NOT NULL,
    PRIMARY KEY (park_id, driver_id)
);
CREATE INDEX rejected_rejected_at_idx ON deptrans.rejected (rejected_at, park_id, driver_id);
