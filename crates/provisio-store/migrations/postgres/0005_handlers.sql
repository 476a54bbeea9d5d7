-- Handlers (gates and notify), deliveries of events to notify handlers with their attempt
-- log, automation rules and their runs; events learn whether they were handed out yet;
-- products learn which module outputs they copy into client fields.

CREATE TABLE handlers (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  TEXT    NOT NULL UNIQUE,
    kind                  TEXT    NOT NULL,
    target                TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    phase                 TEXT    NOT NULL,
    events                JSONB   NOT NULL,
    timeout_ms            BIGINT NOT NULL,
    ord                   BIGINT NOT NULL,
    on_error              TEXT    NOT NULL,
    secret                BYTEA,
    previous_secret       BYTEA,
    previous_secret_until BIGINT,
    email                 JSONB,
    disable_after_secs    BIGINT NOT NULL,
    failing_since         BIGINT,
    disabled_reason       TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handler_id  BIGINT NOT NULL REFERENCES handlers (id) ON DELETE CASCADE,
    event_id    BIGINT NOT NULL,
    event_type  TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (handler_id, event_id)
);
CREATE INDEX ix_deliveries_due ON deliveries (next_at) WHERE state = 'pending';
-- Order per subject: is an earlier delivery of the same subject to the same handler open?
CREATE INDEX ix_deliveries_open ON deliveries (handler_id, subject, id) WHERE state IN ('pending', 'running');
CREATE INDEX ix_deliveries_handler ON deliveries (handler_id, id);

CREATE TABLE delivery_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    succeeded   BOOLEAN NOT NULL,
    status_code BIGINT,
    detail      TEXT
);
CREATE INDEX ix_delivery_attempts ON delivery_attempts (delivery_id, id);

CREATE TABLE rules (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    on_event   TEXT    NOT NULL,
    action     JSONB   NOT NULL,
    delay_secs BIGINT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE rule_runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id     BIGINT NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    event_id    BIGINT NOT NULL,
    subject     TEXT    NOT NULL,
    due_at      BIGINT NOT NULL,
    state       TEXT    NOT NULL,
    result      TEXT,
    lease_until BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (rule_id, event_id)
);
CREATE INDEX ix_rule_runs_due ON rule_runs (due_at) WHERE state = 'pending';

ALTER TABLE events ADD COLUMN dispatched BOOLEAN NOT NULL DEFAULT FALSE;
-- Events stored before handlers existed have nobody to go to.
UPDATE events SET dispatched = TRUE;
CREATE INDEX ix_events_undispatched ON events (id) WHERE dispatched = FALSE;

ALTER TABLE products ADD COLUMN client_fields JSONB NOT NULL DEFAULT '{}';
