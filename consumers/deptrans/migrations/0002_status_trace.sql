-- The W3C traceparent of the record a queued status came from: the sender's span links to it,
-- so a status's trace reaches from the ingress request to the KRT request that reported it.
ALTER TABLE deptrans.status_queue ADD COLUMN traceparent text;
