-- The W3C trace id (32 lowercase hex digits) each job gets when it is queued and keeps
-- across its attempts, sent in `traceparent` to remotes so their logs can be joined with
-- Provisio's. Jobs queued before this migration have none.
ALTER TABLE jobs ADD COLUMN trace_id TEXT;
