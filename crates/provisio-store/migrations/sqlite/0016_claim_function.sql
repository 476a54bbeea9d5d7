-- Nothing on SQLite: its one writer claims inside BEGIN IMMEDIATE (claim_tx); PostgreSQL's
-- 0016 adds the one-round-trip claim function.
SELECT 1;
