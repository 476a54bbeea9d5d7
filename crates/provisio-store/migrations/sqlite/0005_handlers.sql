-- Handlers (gates and notify), deliveries of events to notify handlers with their attempt
-- log, automation rules and their runs; events learn whether they were handed out yet;
-- products learn which module outputs they copy into client fields.

CREATE TABLE handlers (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    name                  TEXT    NOT NULL UNIQUE,
    kind                  TEXT    NOT NULL,
    target                TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    phase                 TEXT    NOT NULL,
    events                TEXT    NOT NULL,
    timeout_ms            INTEGER NOT NULL,
    ord                   INTEGER NOT NULL,
    on_error              TEXT    NOT NULL,
    secret                BLOB,
    previous_secret       BLOB,
    previous_secret_until INTEGER,
    email                 TEXT,
    disable_after_secs    INTEGER NOT NULL,
    failing_since         INTEGER,
    disabled_reason       TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    handler_id  INTEGER NOT NULL REFERENCES handlers (id) ON DELETE CASCADE,
    event_id    INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (handler_id, event_id)
);
CREATE INDEX ix_deliveries_due ON deliveries (next_at) WHERE state = 'pending';
-- Order per subject: is an earlier delivery of the same subject to the same handler open?
CREATE INDEX ix_deliveries_open ON deliveries (handler_id, subject, id) WHERE state IN ('pending', 'running');
CREATE INDEX ix_deliveries_handler ON deliveries (handler_id, id);

CREATE TABLE delivery_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    succeeded   BOOLEAN NOT NULL,
    status_code INTEGER,
    detail      TEXT
);
CREATE INDEX ix_delivery_attempts ON delivery_attempts (delivery_id, id);

CREATE TABLE rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    on_event   TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    delay_secs INTEGER NOT NULL,
    enabled    BOOLEAN NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE rule_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id     INTEGER NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    event_id    INTEGER NOT NULL,
    subject     TEXT    NOT NULL,
    due_at      INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    result      TEXT,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (rule_id, event_id)
);
CREATE INDEX ix_rule_runs_due ON rule_runs (due_at) WHERE state = 'pending';

ALTER TABLE events ADD COLUMN dispatched BOOLEAN NOT NULL DEFAULT FALSE;
-- Events stored before handlers existed have nobody to go to.
UPDATE events SET dispatched = TRUE;
CREATE INDEX ix_events_undispatched ON events (id) WHERE dispatched = FALSE;

ALTER TABLE products ADD COLUMN client_fields TEXT NOT NULL DEFAULT '{}';
