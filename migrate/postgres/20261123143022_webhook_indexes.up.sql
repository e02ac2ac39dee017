-- create index "webhookattempt_delivery_id_at" to table: "webhook_attempts"
CREATE INDEX "webhookattempt_delivery_id_at" ON "webhook_attempts" ("delivery_id", "at");
-- create index "webhookdelivery_webhook_id_event_id" to table: "webhook_deliveries"
CREATE UNIQUE INDEX "webhookdelivery_webhook_id_event_id" ON "webhook_deliveries" ("webhook_id", "event_id");
