-- reverse: modify "api_keys" table
ALTER TABLE "api_keys" DROP COLUMN "expiry_locked", DROP COLUMN "limits_locked";
