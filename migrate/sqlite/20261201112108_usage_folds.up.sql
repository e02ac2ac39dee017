-- create index "usagerollup_granularity_bucket_start" to table: "usage_rollups"
CREATE INDEX `usagerollup_granularity_bucket_start` ON `usage_rollups` (`granularity`, `bucket_start`);
-- create "usage_folds" table
CREATE TABLE `usage_folds` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `folded_before` datetime NOT NULL);
-- the fold's single row (hand-written): in a database with usage, every minute before
-- the next one already has its hour and day rollups, which the recorder wrote until
-- now; in a new one, nothing is folded yet. The time is in the text form the
-- server's driver writes (see internal/data/store).
INSERT INTO `usage_folds` (`id`, `folded_before`) VALUES (1, CASE WHEN EXISTS (SELECT 1 FROM `usage_rollups`)
  THEN strftime('%Y-%m-%d %H:%M:00+00:00', 'now', '+1 minute') ELSE '1970-01-01 00:00:00+00:00' END);
