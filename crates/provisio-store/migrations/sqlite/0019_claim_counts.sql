-- Nothing on SQLite: PostgreSQL's 0019 rewrites its claim function and notification trigger
-- (SQLite claims in claim_tx and sends no notifications).
SELECT 1;
