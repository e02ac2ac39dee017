package app

import (
	"context"
	"fmt"
	"io"

	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/domain/audit"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// AdminKeyActor is the audit actor of the keys that `latchkey admin-key` mints.
const AdminKeyActor = "latchkey admin-key"

// MintAdminKey is `latchkey admin-key`: it opens the configured database (applying
// migrations), creates a new platform admin key named name, audited, and prints its
// secret once to out. It needs no running server and changes no other key.
func MintAdminKey(ctx context.Context, cfg config.Config, name string, out io.Writer) error {
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	audit.Register(st.Client)
	secret, err := keys.MintAdmin(ctx, st.Client, name, AdminKeyActor)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, `
  New platform admin key (%s database). It is shown only this once; store it now:

      %s

  The creation is in the audit log (actor %q). Other admin keys still work:
  list them with { apiKeys(where: {tenantIDIsNil: true}) { edges { node { id name prefix status } } } }
  and revoke a lost one with mutation { revokeApiKey(id: "key_...") { status } }.

`, st.Dialect, secret, AdminKeyActor)
	return nil
}
