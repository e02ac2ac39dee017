-- reverse: modify "usage_rollups" table
ALTER TABLE "usage_rollups" DROP COLUMN "uncharged";
-- reverse: modify "usage_logs" table
ALTER TABLE "usage_logs" DROP COLUMN "owner_id";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "key_prefix";
-- reverse: create index "apikey_tenant_id_owner_id" to table: "api_keys"
DROP INDEX "apikey_tenant_id_owner_id";
-- reverse: modify "api_keys" table
ALTER TABLE "api_keys" DROP COLUMN "enabled", DROP COLUMN "permissions", DROP COLUMN "meta", DROP COLUMN "owner_id", DROP COLUMN "environment", DROP COLUMN "kind";
