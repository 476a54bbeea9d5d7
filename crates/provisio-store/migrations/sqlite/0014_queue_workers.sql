-- Worker nodes seen claiming jobs within a lease's length: each gets an equal share of
-- every server's slots (see claim_tx), so one busy node cannot keep the others out.
CREATE TABLE queue_workers (
    owner TEXT PRIMARY KEY NOT NULL,
    seen_at BIGINT NOT NULL
);
