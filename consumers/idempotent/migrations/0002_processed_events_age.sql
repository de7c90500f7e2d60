-- Pruning: `processed_events` rows older than the consumer's retention window are deleted in
-- batches (`switchyard_idempotent::prune`); this index finds them without a full scan.
CREATE INDEX IF NOT EXISTS processed_events_age ON processed_events (consumer, processed_at);
