-- A service's page reads the newest deliveries of its subject (`service:ID`) by this index;
-- the only other way to them is by event, which `(handler_id, event_id)` cannot serve
-- without reading every handler's deliveries.
CREATE INDEX ix_deliveries_subject ON deliveries (subject, id);
