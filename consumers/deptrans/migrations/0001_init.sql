-- deptrans: status queue, KRT session statuses, bound KRT ids and the shared KRT token.
CREATE SCHEMA IF NOT EXISTS deptrans;

-- Latest status per driver still to be pushed to KRT. The consumer upserts (newer wins), the
-- sender claims rows with a lease and deletes exactly the versions it pushed.
CREATE TABLE deptrans.status_queue (
    park_id       text        NOT NULL,
    driver_id     text        NOT NULL,
    status        text        NOT NULL,
    updated_at    timestamptz NOT NULL,
    claimed_until timestamptz,
    PRIMARY KEY (park_id, driver_id)
);
CREATE INDEX status_queue_updated_at_idx ON deptrans.status_queue (updated_at);

-- Event time of the last status pushed per driver: a late, older event is not queued again
-- after the newer one was sent and its queue row deleted.
CREATE TABLE deptrans.sent_marks (
    park_id    text        NOT NULL,
    driver_id  text        NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (park_id, driver_id)
);
CREATE INDEX sent_marks_updated_at_idx ON deptrans.sent_marks (updated_at);

-- KRT's answer per driver licence: the state of the work shift and when it ends.
-- updated_at is the write time (the cursor of /internal/v1/status/updates).
CREATE TABLE deptrans.session_statuses (
    driver_license_pd_id text        PRIMARY KEY,
    session_status       text        NOT NULL,
    status_at            timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    ended_at             timestamptz
);
CREATE INDEX session_statuses_updated_at_idx ON deptrans.session_statuses (updated_at, driver_license_pd_id);
CREATE INDEX session_statuses_ended_at_idx ON deptrans.session_statuses (ended_at);

-- KRT ids bound by drivers, checked against the licence by KRT before being stored.
CREATE TABLE deptrans.profiles (
    driver_license_pd_id text        PRIMARY KEY,
    deptrans_id          text        NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX profiles_updated_at_idx ON deptrans.profiles (updated_at, driver_license_pd_id);

-- The one KRT bearer token every instance shares.
CREATE TABLE deptrans.krt_token (
    id           smallint    PRIMARY KEY CHECK (id = 1),
    access_token text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
