-- drop index "usagelog_tenant_id" from table: "usage_logs"
DROP INDEX `usagelog_tenant_id`;
