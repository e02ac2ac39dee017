-- modify "api_keys" table
ALTER TABLE "api_keys" ADD COLUMN "limits" jsonb NULL, ADD COLUMN "credits_remaining" bigint NULL, ADD COLUMN "credits_refill_amount" bigint NULL, ADD COLUMN "credits_refill_interval" character varying NULL, ADD COLUMN "credits_granted" bigint NULL, ADD COLUMN "credits_period_start" timestamptz NULL;
-- create "owners" table
CREATE TABLE "owners" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "tenant_id" character varying NOT NULL, "owner_id" character varying NOT NULL, "meta" jsonb NULL, "rate_limit" bigint NULL, "rate_limit_window_seconds" bigint NULL, "quota" bigint NULL, "quota_period" character varying NULL, PRIMARY KEY ("id"));
-- create index "owner_tenant_id" to table: "owners"
CREATE INDEX "owner_tenant_id" ON "owners" ("tenant_id");
-- create index "owner_tenant_id_owner_id" to table: "owners"
CREATE UNIQUE INDEX "owner_tenant_id_owner_id" ON "owners" ("tenant_id", "owner_id");
-- create "plans" table
CREATE TABLE "plans" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "key_rate_limit" bigint NOT NULL, "key_rate_limit_window_seconds" bigint NOT NULL, "key_quota" bigint NOT NULL DEFAULT 0, "quota_period" character varying NOT NULL DEFAULT 'MONTH', "tenant_rate_limit" bigint NOT NULL DEFAULT 0, "tenant_rate_limit_window_seconds" bigint NOT NULL DEFAULT 3600, "tenant_quota" bigint NOT NULL DEFAULT 0, "max_keys" bigint NOT NULL DEFAULT 0, "key_limits" jsonb NULL, PRIMARY KEY ("id"));
-- create index "plans_name_key" to table: "plans"
CREATE UNIQUE INDEX "plans_name_key" ON "plans" ("name");
-- seed the plans that used to be code: per-key defaults, tenant-wide caps and key counts
INSERT INTO "plans" ("id", "created_at", "updated_at", "name", "key_rate_limit", "key_rate_limit_window_seconds", "key_quota", "quota_period", "tenant_rate_limit", "tenant_rate_limit_window_seconds", "tenant_quota", "max_keys") VALUES
  ('pln_free', now(), now(), 'free', 1000, 3600, 100000, 'MONTH', 10000, 3600, 1000000, 100),
  ('pln_pro', now(), now(), 'pro', 100000, 3600, 10000000, 'MONTH', 1000000, 3600, 100000000, 1000);
