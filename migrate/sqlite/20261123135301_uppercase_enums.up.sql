-- disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
-- create "new_webhook_deliveries" table
CREATE TABLE `new_webhook_deliveries` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `tenant_id` text NOT NULL, `event_id` text NOT NULL, `event_type` text NOT NULL, `payload` text NOT NULL, `status` text NOT NULL DEFAULT ('PENDING'), `attempts` integer NOT NULL DEFAULT (0), `next_attempt_at` datetime NULL, `last_attempt_at` datetime NULL, `response_status` integer NULL, `latency_ms` integer NULL, `error` text NULL, `webhook_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `webhook_deliveries_webhooks_deliveries` FOREIGN KEY (`webhook_id`) REFERENCES `webhooks` (`id`) ON DELETE NO ACTION);
-- copy rows from old table "webhook_deliveries" to new temporary table "new_webhook_deliveries"
INSERT INTO `new_webhook_deliveries` (`id`, `created_at`, `updated_at`, `tenant_id`, `event_id`, `event_type`, `payload`, `status`, `attempts`, `next_attempt_at`, `last_attempt_at`, `response_status`, `latency_ms`, `error`, `webhook_id`) SELECT `id`, `created_at`, `updated_at`, `tenant_id`, `event_id`, `event_type`, `payload`, IFNULL(`status`, ('PENDING')) AS `status`, `attempts`, `next_attempt_at`, `last_attempt_at`, `response_status`, `latency_ms`, `error`, `webhook_id` FROM `webhook_deliveries`;
-- drop "webhook_deliveries" table after copying rows
DROP TABLE `webhook_deliveries`;
-- rename temporary table "new_webhook_deliveries" to "webhook_deliveries"
ALTER TABLE `new_webhook_deliveries` RENAME TO `webhook_deliveries`;
-- create index "webhookdelivery_tenant_id" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_tenant_id` ON `webhook_deliveries` (`tenant_id`);
-- create index "webhookdelivery_status_next_attempt_at" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_status_next_attempt_at` ON `webhook_deliveries` (`status`, `next_attempt_at`);
-- enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;
