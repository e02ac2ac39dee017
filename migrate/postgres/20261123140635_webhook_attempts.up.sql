-- create "webhook_attempts" table
CREATE TABLE "webhook_attempts" ("id" character varying NOT NULL, "tenant_id" character varying NOT NULL, "attempt" bigint NOT NULL, "at" timestamptz NOT NULL, "status_code" bigint NULL, "latency_ms" bigint NOT NULL, "error" character varying NULL, "next_attempt_at" timestamptz NULL, "delivery_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "webhook_attempts_webhook_deliveries_attempt_log" FOREIGN KEY ("delivery_id") REFERENCES "webhook_deliveries" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "webhookattempt_tenant_id" to table: "webhook_attempts"
CREATE INDEX "webhookattempt_tenant_id" ON "webhook_attempts" ("tenant_id");
