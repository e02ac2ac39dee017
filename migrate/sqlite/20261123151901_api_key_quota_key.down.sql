-- reverse: add column "quota_key" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `quota_key`;
