-- A service's order key is unique where it has one. The index held an entry for every
-- service, keyed NULL for the many ordered without a key, written with each order and
-- with every update that is not HOT (an outcome's status change, say); now only keyed
-- orders are in it. A lookup by key (`order_key = $1`) still uses it, and NULLs never
-- clashed.
DROP INDEX ux_services_order_key;
CREATE UNIQUE INDEX ux_services_order_key ON services (order_key) WHERE order_key IS NOT NULL;
