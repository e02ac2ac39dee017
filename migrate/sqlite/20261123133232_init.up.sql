-- create "api_keys" table
CREATE TABLE `api_keys` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `name` text NOT NULL, `prefix` text NOT NULL, `hash` text NOT NULL, `admin` bool NOT NULL DEFAULT (false), `scopes` json NOT NULL, `rate_limit` integer NULL, `rate_limit_window_seconds` integer NULL, `expires_at` datetime NULL, `last_used_at` datetime NULL, `revoked_at` datetime NULL, `rotated_from_id` text NULL, `tenant_id` text NULL, PRIMARY KEY (`id`), CONSTRAINT `api_keys_api_keys_rotated_to` FOREIGN KEY (`rotated_from_id`) REFERENCES `api_keys` (`id`) ON DELETE SET NULL, CONSTRAINT `api_keys_tenants_api_keys` FOREIGN KEY (`tenant_id`) REFERENCES `tenants` (`id`) ON DELETE SET NULL);
-- create index "api_keys_hash_key" to table: "api_keys"
CREATE UNIQUE INDEX `api_keys_hash_key` ON `api_keys` (`hash`);
-- create index "apikey_tenant_id" to table: "api_keys"
CREATE INDEX `apikey_tenant_id` ON `api_keys` (`tenant_id`);
-- create "audit_logs" table
CREATE TABLE `audit_logs` (`id` text NOT NULL, `tenant_id` text NULL, `actor` text NOT NULL, `actor_key_id` text NULL, `action` text NOT NULL, `object_type` text NOT NULL, `object_id` text NOT NULL, `changed_fields` json NULL, `created_at` datetime NOT NULL, PRIMARY KEY (`id`));
-- create index "auditlog_tenant_id" to table: "audit_logs"
CREATE INDEX `auditlog_tenant_id` ON `audit_logs` (`tenant_id`);
-- create index "auditlog_created_at" to table: "audit_logs"
CREATE INDEX `auditlog_created_at` ON `audit_logs` (`created_at`);
-- create "tenants" table
CREATE TABLE `tenants` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `name` text NOT NULL, `slug` text NOT NULL, `plan` text NOT NULL DEFAULT ('free'), `active` bool NOT NULL DEFAULT (true), PRIMARY KEY (`id`));
-- create index "tenants_slug_key" to table: "tenants"
CREATE UNIQUE INDEX `tenants_slug_key` ON `tenants` (`slug`);
-- create "usage_logs" table
CREATE TABLE `usage_logs` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `tenant_id` text NOT NULL, `api_key_id` text NOT NULL, `operation_name` text NOT NULL DEFAULT (''), `operation_type` text NOT NULL, `root_fields` json NULL, `outcome` text NOT NULL, `latency_ms` integer NOT NULL, `ip` text NOT NULL DEFAULT (''), `at` datetime NOT NULL);
-- create index "usagelog_tenant_id" to table: "usage_logs"
CREATE INDEX `usagelog_tenant_id` ON `usage_logs` (`tenant_id`);
-- create index "usagelog_api_key_id_at" to table: "usage_logs"
CREATE INDEX `usagelog_api_key_id_at` ON `usage_logs` (`api_key_id`, `at`);
-- create index "usagelog_at" to table: "usage_logs"
CREATE INDEX `usagelog_at` ON `usage_logs` (`at`);
-- create "webhooks" table
CREATE TABLE `webhooks` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `url` text NOT NULL, `description` text NOT NULL DEFAULT (''), `events` json NOT NULL, `secret` text NOT NULL, `previous_secret` text NULL, `previous_secret_expires_at` datetime NULL, `active` bool NOT NULL DEFAULT (true), `disabled_reason` text NULL, `failing_since` datetime NULL, `tenant_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `webhooks_tenants_webhooks` FOREIGN KEY (`tenant_id`) REFERENCES `tenants` (`id`) ON DELETE NO ACTION);
-- create index "webhook_tenant_id" to table: "webhooks"
CREATE INDEX `webhook_tenant_id` ON `webhooks` (`tenant_id`);
-- create "webhook_deliveries" table
CREATE TABLE `webhook_deliveries` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `tenant_id` text NOT NULL, `event_id` text NOT NULL, `event_type` text NOT NULL, `payload` text NOT NULL, `status` text NOT NULL DEFAULT ('pending'), `attempts` integer NOT NULL DEFAULT (0), `next_attempt_at` datetime NULL, `last_attempt_at` datetime NULL, `response_status` integer NULL, `latency_ms` integer NULL, `error` text NULL, `webhook_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `webhook_deliveries_webhooks_deliveries` FOREIGN KEY (`webhook_id`) REFERENCES `webhooks` (`id`) ON DELETE NO ACTION);
-- create index "webhookdelivery_tenant_id" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_tenant_id` ON `webhook_deliveries` (`tenant_id`);
-- create index "webhookdelivery_status_next_attempt_at" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_status_next_attempt_at` ON `webhook_deliveries` (`status`, `next_attempt_at`);
