-- create index "usagelog_tenant_id_at" to table: "usage_logs"
CREATE INDEX "usagelog_tenant_id_at" ON "usage_logs" ("tenant_id", "at");
