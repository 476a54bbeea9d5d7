-- The catalog generation: one counter that every change to a record nodes keep in memory
-- (API keys, resellers, products, servers, handlers) bumps in the same transaction, so a
-- node that reads it before using its copies never uses one older than a committed change,
-- whichever process made it. A key's last use (`last_used_at`) is not such a change.
CREATE TABLE catalog_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO catalog_generation (id, n) VALUES (1, 0);
CREATE TRIGGER tg_catalog_servers_insert AFTER INSERT ON servers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_servers_update AFTER UPDATE ON servers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_servers_delete AFTER DELETE ON servers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_products_insert AFTER INSERT ON products
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_products_update AFTER UPDATE ON products
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_products_delete AFTER DELETE ON products
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_handlers_insert AFTER INSERT ON handlers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_handlers_update AFTER UPDATE ON handlers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_handlers_delete AFTER DELETE ON handlers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_resellers_insert AFTER INSERT ON resellers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_resellers_update AFTER UPDATE ON resellers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_resellers_delete AFTER DELETE ON resellers
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_api_keys_insert AFTER INSERT ON api_keys
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_api_keys_update AFTER UPDATE OF name, prefix, hash, role, client_id, reseller_id, actions, reveal_secrets, expires_at, revoked_at ON api_keys
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tg_catalog_api_keys_delete AFTER DELETE ON api_keys
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
END;
