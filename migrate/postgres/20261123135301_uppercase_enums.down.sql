-- reverse: modify "webhook_deliveries" table
ALTER TABLE "webhook_deliveries" ALTER COLUMN "status" SET DEFAULT 'pending';
