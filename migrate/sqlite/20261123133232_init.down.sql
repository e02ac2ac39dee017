-- reverse: create index "webhookdelivery_status_next_attempt_at" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_status_next_attempt_at`;
-- reverse: create index "webhookdelivery_tenant_id" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_tenant_id`;
-- reverse: create "webhook_deliveries" table
DROP TABLE `webhook_deliveries`;
-- reverse: create index "webhook_tenant_id" to table: "webhooks"
DROP INDEX `webhook_tenant_id`;
-- reverse: create "webhooks" table
DROP TABLE `webhooks`;
-- reverse: create index "usagelog_at" to table: "usage_logs"
DROP INDEX `usagelog_at`;
-- reverse: create index "usagelog_api_key_id_at" to table: "usage_logs"
DROP INDEX `usagelog_api_key_id_at`;
-- reverse: create index "usagelog_tenant_id" to table: "usage_logs"
DROP INDEX `usagelog_tenant_id`;
-- reverse: create "usage_logs" table
DROP TABLE `usage_logs`;
-- reverse: create index "tenants_slug_key" to table: "tenants"
DROP INDEX `tenants_slug_key`;
-- reverse: create "tenants" table
DROP TABLE `tenants`;
-- reverse: create index "auditlog_created_at" to table: "audit_logs"
DROP INDEX `auditlog_created_at`;
-- reverse: create index "auditlog_tenant_id" to table: "audit_logs"
DROP INDEX `auditlog_tenant_id`;
-- reverse: create "audit_logs" table
DROP TABLE `audit_logs`;
-- reverse: create index "apikey_tenant_id" to table: "api_keys"
DROP INDEX `apikey_tenant_id`;
-- reverse: create index "api_keys_hash_key" to table: "api_keys"
DROP INDEX `api_keys_hash_key`;
-- reverse: create "api_keys" table
DROP TABLE `api_keys`;
