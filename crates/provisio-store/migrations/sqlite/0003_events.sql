-- Events: what happened, written in the same transaction as the change that caused it.

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    type    TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    subject TEXT    NOT NULL,
    payload TEXT    NOT NULL
);
CREATE INDEX ix_events_type ON events (type, id);
CREATE INDEX ix_events_subject ON events (subject, id);
CREATE INDEX ix_events_at ON events (at);
