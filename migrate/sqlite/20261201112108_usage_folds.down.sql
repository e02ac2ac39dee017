-- reverse: create "usage_folds" table
DROP TABLE `usage_folds`;
-- reverse: create index "usagerollup_granularity_bucket_start" to table: "usage_rollups"
DROP INDEX `usagerollup_granularity_bucket_start`;
