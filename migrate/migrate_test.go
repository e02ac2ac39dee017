package migrate_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/testdb"
)

// The migrations apply on a fresh database, a second start applies nothing, and the
// migrated schema equals the ent schema (so a schema change without a new migration
// fails here).
func TestMigrationsApplyOnceAndMatchSchema(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			url := testdb.URL(t, d)
			s, err := store.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			if s.Applied == 0 {
				t.Fatal("first open applied no migration")
			}
			s.Close()
			s, err = store.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Applied != 0 {
				t.Fatalf("second open applied %d migrations, want 0", s.Applied)
			}
			var buf bytes.Buffer
			if err := s.Client.Schema.WriteTo(ctx, &buf); err != nil {
				t.Fatal(err)
			}
			var pending []string
			for _, line := range strings.Split(buf.String(), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || line == "BEGIN;" || line == "COMMIT;" || strings.HasPrefix(line, "--") {
					continue
				}
				pending = append(pending, line)
			}
			if len(pending) > 0 {
				t.Fatalf("ent schema differs from the migrations; run `go run ./migrate/gen -name NAME`:\n%s", strings.Join(pending, "\n"))
			}
		})
	}
}
