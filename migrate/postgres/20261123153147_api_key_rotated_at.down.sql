-- reverse: modify "api_keys" table
ALTER TABLE "api_keys" DROP COLUMN "rotated_at";
