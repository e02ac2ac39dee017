-- modify "api_keys" table
ALTER TABLE "api_keys" ADD COLUMN "limits_locked" boolean NOT NULL DEFAULT false, ADD COLUMN "expiry_locked" boolean NOT NULL DEFAULT false;
-- backfill: who set the limits and expiries of existing tenant keys was not recorded,
-- so they count as set by a platform admin (tenant keys may only tighten them; a
-- platform admin can unlock them)
UPDATE "api_keys" SET "limits_locked" = true WHERE "tenant_id" IS NOT NULL AND ("rate_limit" IS NOT NULL OR "rate_limit_window_seconds" IS NOT NULL OR "quota" IS NOT NULL OR "quota_period" IS NOT NULL);
UPDATE "api_keys" SET "expiry_locked" = true WHERE "tenant_id" IS NOT NULL AND "expires_at" IS NOT NULL;
