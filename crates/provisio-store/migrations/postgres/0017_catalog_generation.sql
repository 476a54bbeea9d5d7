-- The catalog generation: one counter that every change to a record nodes keep in memory
-- (API keys, resellers, products, servers, handlers) bumps in the same transaction, so a
-- node that reads it before using its copies never uses one older than a committed change,
-- whichever process made it. A key's last use (`last_used_at`) is not such a change.
CREATE TABLE catalog_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT  NOT NULL
);
INSERT INTO catalog_generation (id, n) VALUES (1, 0);
CREATE FUNCTION provisio_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_generation SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
-- Per row, so a statement that changes nothing (a handler already not failing) bumps nothing.
CREATE TRIGGER tg_catalog_servers AFTER INSERT OR UPDATE OR DELETE ON servers
    FOR EACH ROW EXECUTE FUNCTION provisio_catalog_changed();
CREATE TRIGGER tg_catalog_products AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION provisio_catalog_changed();
CREATE TRIGGER tg_catalog_handlers AFTER INSERT OR UPDATE OR DELETE ON handlers
    FOR EACH ROW EXECUTE FUNCTION provisio_catalog_changed();
CREATE TRIGGER tg_catalog_resellers AFTER INSERT OR UPDATE OR DELETE ON resellers
    FOR EACH ROW EXECUTE FUNCTION provisio_catalog_changed();
CREATE TRIGGER tg_catalog_api_keys AFTER INSERT OR UPDATE OF name, prefix, hash, role, client_id, reseller_id, actions, reveal_secrets, expires_at, revoked_at OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION provisio_catalog_changed();
