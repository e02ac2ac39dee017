-- reverse: add column "rotated_at" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `rotated_at`;
