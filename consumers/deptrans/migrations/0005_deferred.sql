-- Rows the sender cannot send yet (driver unknown to the profiles cache, no licence in
-- personal): why, since when, and how often they were tried. NULL reason = due. A deferred row
-- is retried with growing delays and moves to deptrans.rejected past sender.deferred_max_age_ms.
ALTER TABLE deptrans.status_queue
    ADD COLUMN deferred_reason text,
    ADD COLUMN deferred_since  timestamptz,
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0;
