-- consumer keys: add columns to "api_keys" (appended: SQLite adds a column with a
-- constant default without rebuilding the table), the owner index, the tenants' key
-- prefix, the owner of usage rows and the uncharged counter of rollups
ALTER TABLE `api_keys` ADD COLUMN `kind` text NOT NULL DEFAULT ('MANAGEMENT');
ALTER TABLE `api_keys` ADD COLUMN `environment` text NOT NULL DEFAULT ('LIVE');
ALTER TABLE `api_keys` ADD COLUMN `owner_id` text NULL;
ALTER TABLE `api_keys` ADD COLUMN `meta` json NULL;
ALTER TABLE `api_keys` ADD COLUMN `permissions` json NULL;
ALTER TABLE `api_keys` ADD COLUMN `enabled` bool NOT NULL DEFAULT (true);
CREATE INDEX `apikey_tenant_id_owner_id` ON `api_keys` (`tenant_id`, `owner_id`);
ALTER TABLE `tenants` ADD COLUMN `key_prefix` text NOT NULL DEFAULT ('lk');
ALTER TABLE `usage_logs` ADD COLUMN `owner_id` text NULL;
ALTER TABLE `usage_rollups` ADD COLUMN `uncharged` integer NOT NULL DEFAULT (0);
