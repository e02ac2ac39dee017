-- reverse: create index "usagerollup_tenant_id_granularity_bucket_start" to table: "usage_rollups"
DROP INDEX "usagerollup_tenant_id_granularity_bucket_start";
-- reverse: create index "usagerollup_tenant_id" to table: "usage_rollups"
DROP INDEX "usagerollup_tenant_id";
-- reverse: create index "usagerollup_api_key_id_granularity_bucket_start" to table: "usage_rollups"
DROP INDEX "usagerollup_api_key_id_granularity_bucket_start";
-- reverse: create "usage_rollups" table
DROP TABLE "usage_rollups";
-- reverse: modify "api_keys" table
ALTER TABLE "api_keys" DROP COLUMN "quota_period", DROP COLUMN "quota";
