package store

import "testing"

func TestSpanName(t *testing.T) {
	for q, want := range map[string]string{
		"SELECT `api_keys`.`id` FROM `api_keys` WHERE `api_keys`.`hash` = ?":    "SELECT api_keys",
		`SELECT COUNT(*) FROM "usage_logs" WHERE "usage_logs"."tenant_id" = $1`: "SELECT usage_logs",
		`INSERT INTO "audit_logs" ("actor") VALUES ($1) RETURNING "id"`:         "INSERT audit_logs",
		`UPDATE "api_keys" SET "revoked_at" = $1 WHERE "id" = $2`:               "UPDATE api_keys",
		`DELETE FROM "webhooks" WHERE "id" = $1`:                                "DELETE webhooks",
		"SELECT pg_advisory_xact_lock($1)":                                      "SELECT",
		"":                                                                      "db",
	} {
		if got := spanName(q); got != want {
			t.Errorf("spanName(%q) = %q, want %q", q, got, want)
		}
	}
}
