package keys

import (
	"context"
	"fmt"

	"github.com/latchkey/latchkey/ent"
	entapikey "github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/txn"
)

// bootstrapLock is the PostgreSQL advisory lock that makes instances starting together
// on a fresh database create one admin key between them.
const bootstrapLock = 7346158901

// Bootstrap creates a platform admin key when no unrevoked one exists, and returns its
// secret (shown once; only its hash is stored), or "" when an admin key exists already.
// dialect is the store's ("postgres" or "sqlite"). It returns the database's error.
func Bootstrap(ctx context.Context, client *ent.Client, dialect string) (string, error) {
	ctx = rule.SystemContext(ctx)
	var secret string
	err := txn.WithTx(ctx, client, func(ctx context.Context, tx *ent.Client) error {
		if dialect == "postgres" {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", bootstrapLock); err != nil {
				return err
			}
		}
		exists, err := tx.ApiKey.Query().Where(entapikey.Admin(true), entapikey.RevokedAtIsNil()).Exist(ctx)
		if err != nil || exists {
			return err
		}
		if secret, err = Generate(KindAdmin); err != nil {
			return err
		}
		return tx.ApiKey.Create().
			SetName("bootstrap admin").
			SetAdmin(true).
			SetPrefix(DisplayPrefix(secret)).
			SetHash(HashHex(secret)).
			SetScopes([]string{}).
			Exec(ctx)
	})
	if err != nil {
		return "", fmt.Errorf("create admin key: %w", err)
	}
	return secret, nil
}
