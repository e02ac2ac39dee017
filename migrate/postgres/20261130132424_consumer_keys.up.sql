-- modify "api_keys" table
ALTER TABLE "api_keys" ADD COLUMN "kind" character varying NOT NULL DEFAULT 'MANAGEMENT', ADD COLUMN "environment" character varying NOT NULL DEFAULT 'LIVE', ADD COLUMN "owner_id" character varying NULL, ADD COLUMN "meta" jsonb NULL, ADD COLUMN "permissions" jsonb NULL, ADD COLUMN "enabled" boolean NOT NULL DEFAULT true;
-- create index "apikey_tenant_id_owner_id" to table: "api_keys"
CREATE INDEX "apikey_tenant_id_owner_id" ON "api_keys" ("tenant_id", "owner_id");
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "key_prefix" character varying NOT NULL DEFAULT 'lk';
-- modify "usage_logs" table
ALTER TABLE "usage_logs" ADD COLUMN "owner_id" character varying NULL;
-- modify "usage_rollups" table
ALTER TABLE "usage_rollups" ADD COLUMN "uncharged" bigint NOT NULL DEFAULT 0;
