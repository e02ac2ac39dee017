package keys

import (
	"context"
	"fmt"

	"github.com/latchkey/latchkey/ent"
	entapikey "github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/domain/tenants"
	"github.com/latchkey/latchkey/internal/platform/viewer"
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
		secret, err = createAdmin(ctx, tx, "bootstrap admin")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create admin key: %w", err)
	}
	return secret, nil
}

// MintAdmin always creates a new platform admin key named name (for `latchkey
// admin-key`, when the admin keys are lost) and returns its secret, shown once; only
// its hash is stored. The creation is audited (api_key.created) with actor as the
// actor, e.g. "latchkey admin-key". Existing admin keys are left as they are: revoke a
// lost one with the new key (revokeApiKey), which every instance honours at once.
// It returns the database's error.
func MintAdmin(ctx context.Context, client *ent.Client, name, actor string) (string, error) {
	if name == "" {
		name = "admin"
	}
	name, err := tenants.ValidName("name", name)
	if err != nil {
		return "", err
	}
	// The audit hook names the actor from the viewer; the write itself bypasses the
	// privacy rules like Bootstrap, since no key exists to act with.
	ctx = viewer.NewContext(rule.SystemContext(ctx), &viewer.Viewer{Admin: true, KeyPrefix: actor, Scopes: viewer.AllScopes})
	var secret string
	err = txn.WithTx(ctx, client, func(ctx context.Context, tx *ent.Client) error {
		secret, err = createAdmin(ctx, tx, name)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create admin key: %w", err)
	}
	return secret, nil
}

// createAdmin stores a new platform admin key named name and returns its secret (only
// its hash is stored). It returns the generator's or the database's error.
func createAdmin(ctx context.Context, tx *ent.Client, name string) (string, error) {
	secret, err := Generate(KindAdmin)
	if err != nil {
		return "", err
	}
	return secret, tx.ApiKey.Create().
		SetName(name).
		SetAdmin(true).
		SetPrefix(DisplayPrefix(secret)).
		SetHash(HashHex(secret)).
		SetScopes([]string{}).
		Exec(ctx)
}
