-- reverse: create index "webhookattempt_tenant_id" to table: "webhook_attempts"
DROP INDEX `webhookattempt_tenant_id`;
-- reverse: create "webhook_attempts" table
DROP TABLE `webhook_attempts`;
