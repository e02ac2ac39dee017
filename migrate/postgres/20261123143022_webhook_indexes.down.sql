-- reverse: create index "webhookdelivery_webhook_id_event_id" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_webhook_id_event_id";
-- reverse: create index "webhookattempt_delivery_id_at" to table: "webhook_attempts"
DROP INDEX "webhookattempt_delivery_id_at";
