-- add column "quota_key" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `quota_key` text NULL;
