-- reverse: create index "plans_name_key" to table: "plans"
DROP INDEX `plans_name_key`;
-- reverse: create "plans" table
DROP TABLE `plans`;
-- reverse: create index "owner_tenant_id_owner_id" to table: "owners"
DROP INDEX `owner_tenant_id_owner_id`;
-- reverse: create index "owner_tenant_id" to table: "owners"
DROP INDEX `owner_tenant_id`;
-- reverse: create "owners" table
DROP TABLE `owners`;
-- reverse: add column "credits_period_start" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `credits_period_start`;
-- reverse: add column "credits_granted" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `credits_granted`;
-- reverse: add column "credits_refill_interval" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `credits_refill_interval`;
-- reverse: add column "credits_refill_amount" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `credits_refill_amount`;
-- reverse: add column "credits_remaining" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `credits_remaining`;
-- reverse: add column "limits" to table: "api_keys"
ALTER TABLE `api_keys` DROP COLUMN `limits`;
