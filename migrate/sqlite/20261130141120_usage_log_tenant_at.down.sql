-- reverse: create index "usagelog_tenant_id_at" to table: "usage_logs"
DROP INDEX `usagelog_tenant_id_at`;
