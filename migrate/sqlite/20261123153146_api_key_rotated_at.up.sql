-- add column "rotated_at" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `rotated_at` datetime NULL;
