-- The live (not terminated) services of each server, kept by triggers in the same
-- statement as every insert, status or server change and delete of a service, so placing
-- an order reads one row per candidate server instead of counting services.
CREATE TABLE server_loads (
    server_id     INTEGER PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    live_services INTEGER NOT NULL
);
INSERT INTO server_loads (server_id, live_services)
    SELECT s.id, (SELECT COUNT(*) FROM services v WHERE v.server_id = s.id AND v.status <> 'terminated')
    FROM servers s;

CREATE TRIGGER tr_server_loads_server_insert AFTER INSERT ON servers
BEGIN
    INSERT INTO server_loads (server_id, live_services) VALUES (NEW.id, 0);
END;
-- Foreign keys may be off on a connection; the row goes with its server either way.
CREATE TRIGGER tr_server_loads_server_delete AFTER DELETE ON servers
BEGIN
    DELETE FROM server_loads WHERE server_id = OLD.id;
END;

CREATE TRIGGER tr_server_loads_service_insert AFTER INSERT ON services
WHEN NEW.status <> 'terminated'
BEGIN
    UPDATE server_loads SET live_services = live_services + 1 WHERE server_id = NEW.server_id;
END;
CREATE TRIGGER tr_server_loads_service_delete AFTER DELETE ON services
WHEN OLD.status <> 'terminated'
BEGIN
    UPDATE server_loads SET live_services = live_services - 1 WHERE server_id = OLD.server_id;
END;
CREATE TRIGGER tr_server_loads_service_update AFTER UPDATE OF status, server_id ON services
WHEN (OLD.status <> 'terminated') <> (NEW.status <> 'terminated') OR OLD.server_id <> NEW.server_id
BEGIN
    UPDATE server_loads SET live_services = live_services - 1
        WHERE server_id = OLD.server_id AND OLD.status <> 'terminated';
    UPDATE server_loads SET live_services = live_services + 1
        WHERE server_id = NEW.server_id AND NEW.status <> 'terminated';
END;
