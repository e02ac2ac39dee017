-- modify "api_keys" table
ALTER TABLE "api_keys" ADD COLUMN "quota_key" character varying NULL;
