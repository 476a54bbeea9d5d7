-- Worker nodes present (marked at start and by each lease heartbeat, removed at stop):
-- those seen within a lease's length share every server's slots equally (see claim_tx),
-- so one busy node cannot keep the others out.
CREATE TABLE queue_workers (
    owner TEXT PRIMARY KEY NOT NULL,
    seen_at BIGINT NOT NULL
);
