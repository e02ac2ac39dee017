-- reverse: create index "webhookdelivery_status_next_attempt_at" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_status_next_attempt_at`;
-- reverse: create index "webhookdelivery_tenant_id" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_tenant_id`;
-- reverse: create "new_webhook_deliveries" table
DROP TABLE `new_webhook_deliveries`;
