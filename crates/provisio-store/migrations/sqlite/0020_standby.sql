-- Jobs on standby (PostgreSQL's 0020 says what they are): claimed ahead of a free slot,
-- leased, but not taking one of their server's places until begun.
ALTER TABLE jobs ADD COLUMN standby BOOLEAN NOT NULL DEFAULT 0;
CREATE INDEX ix_jobs_standby ON jobs (lease_owner, server_id, id) WHERE standby AND state = 'running';
