-- add column "quota" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `quota` integer NULL;
-- add column "quota_period" to table: "api_keys"
ALTER TABLE `api_keys` ADD COLUMN `quota_period` text NULL;
-- create "usage_rollups" table
CREATE TABLE `usage_rollups` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `tenant_id` text NOT NULL, `api_key_id` text NOT NULL, `granularity` text NOT NULL, `bucket_start` datetime NOT NULL, `requests` integer NOT NULL DEFAULT (0), `errors` integer NOT NULL DEFAULT (0), `rate_limited` integer NOT NULL DEFAULT (0), `quota_exceeded` integer NOT NULL DEFAULT (0), `latency_sum_ms` integer NOT NULL DEFAULT (0), `lat_a` integer NOT NULL DEFAULT (0), `lat_b` integer NOT NULL DEFAULT (0), `lat_c` integer NOT NULL DEFAULT (0), `lat_d` integer NOT NULL DEFAULT (0), `lat_e` integer NOT NULL DEFAULT (0), `lat_f` integer NOT NULL DEFAULT (0), `lat_g` integer NOT NULL DEFAULT (0), `lat_h` integer NOT NULL DEFAULT (0), `lat_i` integer NOT NULL DEFAULT (0), `lat_j` integer NOT NULL DEFAULT (0), `lat_k` integer NOT NULL DEFAULT (0), `lat_l` integer NOT NULL DEFAULT (0), `lat_m` integer NOT NULL DEFAULT (0), `lat_n` integer NOT NULL DEFAULT (0), `lat_o` integer NOT NULL DEFAULT (0), `lat_p` integer NOT NULL DEFAULT (0));
-- create index "usagerollup_tenant_id" to table: "usage_rollups"
CREATE INDEX `usagerollup_tenant_id` ON `usage_rollups` (`tenant_id`);
-- create index "usagerollup_api_key_id_granularity_bucket_start" to table: "usage_rollups"
CREATE UNIQUE INDEX `usagerollup_api_key_id_granularity_bucket_start` ON `usage_rollups` (`api_key_id`, `granularity`, `bucket_start`);
-- create index "usagerollup_tenant_id_granularity_bucket_start" to table: "usage_rollups"
CREATE INDEX `usagerollup_tenant_id_granularity_bucket_start` ON `usage_rollups` (`tenant_id`, `granularity`, `bucket_start`);
