-- modify "api_keys" table
ALTER TABLE "api_keys" ADD COLUMN "rotated_at" timestamptz NULL;
