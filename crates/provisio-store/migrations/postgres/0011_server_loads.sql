-- The live (not terminated) services of each server, kept by triggers in the same
-- transaction as every insert, status or server change and delete of a service, so placing
-- an order reads one row per candidate server instead of counting services. Concurrent
-- changes add and subtract in place (live_services + 1), waiting on the row's lock, so no
-- change is lost.
CREATE TABLE server_loads (
    server_id     BIGINT PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    live_services BIGINT NOT NULL
);
INSERT INTO server_loads (server_id, live_services)
    SELECT s.id, (SELECT COUNT(*) FROM services v WHERE v.server_id = s.id AND v.status <> 'terminated')
    FROM servers s;

CREATE FUNCTION server_loads_server_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO server_loads (server_id, live_services) VALUES (NEW.id, 0);
    RETURN NULL;
END;
$$;
CREATE TRIGGER tr_server_loads_server_insert AFTER INSERT ON servers
    FOR EACH ROW EXECUTE FUNCTION server_loads_server_insert();

CREATE FUNCTION server_loads_service_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status <> 'terminated' THEN
        UPDATE server_loads SET live_services = live_services - 1 WHERE server_id = OLD.server_id;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status <> 'terminated' THEN
        UPDATE server_loads SET live_services = live_services + 1 WHERE server_id = NEW.server_id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER tr_server_loads_service_insert AFTER INSERT ON services
    FOR EACH ROW WHEN (NEW.status <> 'terminated')
    EXECUTE FUNCTION server_loads_service_change();
CREATE TRIGGER tr_server_loads_service_delete AFTER DELETE ON services
    FOR EACH ROW WHEN (OLD.status <> 'terminated')
    EXECUTE FUNCTION server_loads_service_change();
CREATE TRIGGER tr_server_loads_service_update AFTER UPDATE OF status, server_id ON services
    FOR EACH ROW WHEN ((OLD.status <> 'terminated') IS DISTINCT FROM (NEW.status <> 'terminated')
        OR OLD.server_id IS DISTINCT FROM NEW.server_id)
    EXECUTE FUNCTION server_loads_service_change();
