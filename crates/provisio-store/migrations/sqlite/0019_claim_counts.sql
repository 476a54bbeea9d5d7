-- Nothing on SQLite: PostgreSQL's 0019 rewrites its claim function (claim_tx is SQLite's).
SELECT 1;
