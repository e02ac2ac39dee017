-- add column "limits" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `limits` json NULL;
-- add column "credits_remaining" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `credits_remaining` integer NULL;
-- add column "credits_refill_amount" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `credits_refill_amount` integer NULL;
-- add column "credits_refill_interval" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `credits_refill_interval` text NULL;
-- add column "credits_granted" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `credits_granted` integer NULL;
-- add column "credits_period_start" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `credits_period_start` datetime NULL;
-- create "owners" table
CREATE TABLE `owners` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `tenant_id` text NOT NULL, `owner_id` text NOT NULL, `meta` json NULL, `rate_limit` integer NULL, `rate_limit_window_seconds` integer NULL, `quota` integer NULL, `quota_period` text NULL, PRIMARY KEY (`id`));
-- create index "owner_tenant_id" to table: "owners"
CREATE INDEX `owner_tenant_id` ON `owners` (`tenant_id`);
-- create index "owner_tenant_id_owner_id" to table: "owners"
CREATE UNIQUE INDEX `owner_tenant_id_owner_id` ON `owners` (`tenant_id`, `owner_id`);
-- create "plans" table
CREATE TABLE `plans` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `name` text NOT NULL, `key_rate_limit` integer NOT NULL, `key_rate_limit_window_seconds` integer NOT NULL, `key_quota` integer NOT NULL DEFAULT (0), `quota_period` text NOT NULL DEFAULT ('MONTH'), `tenant_rate_limit` integer NOT NULL DEFAULT (0), `tenant_rate_limit_window_seconds` integer NOT NULL DEFAULT (3600), `tenant_quota` integer NOT NULL DEFAULT (0), `max_keys` integer NOT NULL DEFAULT (0), `key_limits` json NULL, PRIMARY KEY (`id`));
-- create index "plans_name_key" to table: "plans"
CREATE UNIQUE INDEX `plans_name_key` ON `plans` (`name`);
-- seed the plans that used to be code: per-key defaults, tenant-wide caps and key counts
INSERT INTO `plans` (`id`, `created_at`, `updated_at`, `name`, `key_rate_limit`, `key_rate_limit_window_seconds`, `key_quota`, `quota_period`, `tenant_rate_limit`, `tenant_rate_limit_window_seconds`, `tenant_quota`, `max_keys`) VALUES
  ('pln_free', datetime('now'), datetime('now'), 'free', 1000, 3600, 100000, 'MONTH', 10000, 3600, 1000000, 100),
  ('pln_pro', datetime('now'), datetime('now'), 'pro', 100000, 3600, 10000000, 'MONTH', 1000000, 3600, 100000000, 1000);
