-- reverse: add columns "limits_locked" and "expiry_locked" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `expiry_locked`;
ALTER TABLE `api_keys` DROP COLUMN `limits_locked`;
