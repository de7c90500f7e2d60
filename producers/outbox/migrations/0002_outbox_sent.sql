-- Pruning: the relay deletes sent rows older than its `keep_sent` window in batches; this
-- index finds them without a scan of the unsent ones.
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
