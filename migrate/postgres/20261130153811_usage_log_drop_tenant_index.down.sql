-- reverse: drop index "usagelog_tenant_id" from table: "usage_logs"
CREATE INDEX "usagelog_tenant_id" ON "usage_logs" ("tenant_id");
