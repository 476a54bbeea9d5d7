-- Per-service overrides of the product's settings (group edits such as a bigger quota for
-- every site of an invoice), and an index for finding long-suspended services (clean-up).

ALTER TABLE services ADD COLUMN product_overrides JSONB NOT NULL DEFAULT '{}';
CREATE INDEX ix_services_suspended_at ON services (suspended_at) WHERE status = 'suspended';
