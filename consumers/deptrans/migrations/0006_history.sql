-- History, kept `retention_days` (1-30) by recorded_at: every shift state KRT answered per
-- licence, and every status KRT took per driver. The latest state stays where it was
-- (session_statuses, sent_marks); these tables only grow by appends and shrink by retention.
CREATE TABLE deptrans.session_history (
    driver_license_pd_id text        NOT NULL,
    session_status       text        NOT NULL,
    status_at            timestamptz NOT NULL,
    ended_at             timestamptz,
    recorded_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (driver_license_pd_id, status_at, session_status)
);
CREATE INDEX session_history_recorded_at_idx ON deptrans.session_history (recorded_at);

CREATE TABLE deptrans.status_history (
    park_id     text        NOT NULL,
    driver_id   text        NOT NULL,
    status      text        NOT NULL,
    -- The status's own time (the upstream updated_at), as sent to KRT.
    status_at   timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (park_id, driver_id, status_at)
);
CREATE INDEX status_history_recorded_at_idx ON deptrans.status_history (recorded_at);
