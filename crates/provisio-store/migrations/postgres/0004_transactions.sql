-- Client balance transactions: each one changes clients.balance_minor in the same
-- transaction; (client_id, idempotency_key) is unique so a retried request replays.

CREATE TABLE client_transactions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id       BIGINT NOT NULL REFERENCES clients (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('charge', 'payment', 'credit', 'refund')),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    balance_after   BIGINT NOT NULL,
    idempotency_key TEXT    NOT NULL,
    description     TEXT,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX ux_client_transactions_key ON client_transactions (client_id, idempotency_key);
CREATE INDEX ix_client_transactions_client ON client_transactions (client_id, id);
