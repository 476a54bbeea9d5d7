-- The secret keys the sealed values of this database are under, by key id, each with a
-- check value (an HMAC under the key, revealing nothing of it), so that a node started with
-- another key is refused instead of sealing what the others cannot open.
-- state: 'current' (new values are sealed under it; at most one), 'retiring' (a rotation
-- away from it is under way, so every node must still hold it), 'retired' (nothing is
-- sealed under it any more; its key may be dropped from the key files).
CREATE TABLE secret_keys (
    kid         TEXT    PRIMARY KEY,
    check_value TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX ux_secret_keys_current ON secret_keys (state) WHERE state = 'current';
