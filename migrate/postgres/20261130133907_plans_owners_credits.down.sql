-- reverse: create index "plans_name_key" to table: "plans"
DROP INDEX "plans_name_key";
-- reverse: create "plans" table
DROP TABLE "plans";
-- reverse: create index "owner_tenant_id_owner_id" to table: "owners"
DROP INDEX "owner_tenant_id_owner_id";
-- reverse: create index "owner_tenant_id" to table: "owners"
DROP INDEX "owner_tenant_id";
-- reverse: create "owners" table
DROP TABLE "owners";
-- reverse: modify "api_keys" table
ALTER TABLE "api_keys" DROP COLUMN "credits_period_start", DROP COLUMN "credits_granted", DROP COLUMN "credits_refill_interval", DROP COLUMN "credits_refill_amount", DROP COLUMN "credits_remaining", DROP COLUMN "limits";
