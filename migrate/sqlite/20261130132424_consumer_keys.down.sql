-- reverse: consumer keys
ALTER TABLE `usage_rollups` DROP COLUMN `uncharged`;
ALTER TABLE `usage_logs` DROP COLUMN `owner_id`;
ALTER TABLE `tenants` DROP COLUMN `key_prefix`;
DROP INDEX `apikey_tenant_id_owner_id`;
ALTER TABLE `api_keys` DROP COLUMN `enabled`;
ALTER TABLE `api_keys` DROP COLUMN `permissions`;
ALTER TABLE `api_keys` DROP COLUMN `meta`;
ALTER TABLE `api_keys` DROP COLUMN `owner_id`;
ALTER TABLE `api_keys` DROP COLUMN `environment`;
ALTER TABLE `api_keys` DROP COLUMN `kind`;
