-- create "webhook_attempts" table
CREATE TABLE `webhook_attempts` (`id` text NOT NULL, `tenant_id` text NOT NULL, `attempt` integer NOT NULL, `at` datetime NOT NULL, `status_code` integer NULL, `latency_ms` integer NOT NULL, `error` text NULL, `next_attempt_at` datetime NULL, `delivery_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `webhook_attempts_webhook_deliveries_attempt_log` FOREIGN KEY (`delivery_id`) REFERENCES `webhook_deliveries` (`id`) ON DELETE NO ACTION);
-- create index "webhookattempt_tenant_id" to table: "webhook_attempts"
CREATE INDEX `webhookattempt_tenant_id` ON `webhook_attempts` (`tenant_id`);
