-- A service's page reads the newest deliveries of its subject (`service:ID`) by this index;
-- the only other way to them is by event, which `(handler_id, event_id)` cannot serve
-- without reading every handler's deliveries.
CREATE INDEX ix_deliveries_subject ON deliveries (subject, id);
-- The queue's failed jobs filtered by server, action and error kind, in id order: walking
-- (server_id, state, id) instead fetches every failed job of the server from the table
-- when few of them match, and failed jobs (parked for a person) are few enough to index.
CREATE INDEX ix_jobs_failed_by ON jobs (server_id, action, error_kind, id) WHERE state = 'failed';
