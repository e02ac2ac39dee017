// Command gen writes a new versioned migration for each dialect from the ent schema:
//
//	go run ./migrate/gen -name add_quota
//
// It replays the existing migrations on a clean dev database (in-memory SQLite, and a
// temporary database on the PostgreSQL server at DEV_POSTGRES_URL) and writes the
// difference to the ent schema as golang-migrate files. With no difference it writes
// nothing. Run it from the repository root.
//
// After adding or editing a hand-written migration (Atlas cannot write everything, e.g.
// PostgreSQL partitions), recompute the atlas.sum files that the generator checks:
//
//	go run ./migrate/gen -sum
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"os"

	atlasmigrate "ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/sqltool"
	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/schema"
	_ "github.com/lib/pq"
	_ "modernc.org/sqlite"

	entmigrate "github.com/latchkey/latchkey/ent/migrate"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/migrate"
)

func main() {
	name := flag.String("name", "", "name of the migration (required)")
	sum := flag.Bool("sum", false, "only recompute atlas.sum after a hand-written migration")
	flag.Parse()
	if *sum {
		for _, path := range []string{"migrate/sqlite", "migrate/postgres"} {
			if err := writeSum(path); err != nil {
				log.Fatalf("%s: %v", path, err)
			}
		}
		return
	}
	if *name == "" {
		log.Fatal("usage: go run ./migrate/gen -name NAME")
	}
	ctx := context.Background()

	lite, err := sql.Open("sqlite", "file:dev?mode=memory&cache=shared&_pragma=foreign_keys(1)")
	if err != nil {
		log.Fatal(err)
	}
	defer lite.Close()
	if err := diff(ctx, entsql.OpenDB(dialect.SQLite, lite), dialect.SQLite, "migrate/sqlite", *name); err != nil {
		log.Fatalf("sqlite: %v", err)
	}

	pgURL, cleanup, err := testdb.CreatePostgres(ctx, os.Getenv("DEV_POSTGRES_URL"))
	if err != nil {
		log.Fatalf("postgres dev database: %v", err)
	}
	defer cleanup()
	pg, err := sql.Open("postgres", pgURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pg.Close()
	if err := diff(ctx, entsql.OpenDB(dialect.Postgres, pg), dialect.Postgres, "migrate/postgres", *name); err != nil {
		log.Fatalf("postgres: %v", err)
	}
}

// writeSum recomputes the atlas.sum file of the migration directory path.
func writeSum(path string) error {
	dir, err := sqltool.NewGolangMigrateDir(path)
	if err != nil {
		return err
	}
	sum, err := dir.Checksum()
	if err != nil {
		return err
	}
	return atlasmigrate.WriteSumFile(dir, sum)
}

func diff(ctx context.Context, drv *entsql.Driver, dialectName, path, name string) error {
	dir, err := sqltool.NewGolangMigrateDir(path)
	if err != nil {
		return err
	}
	m, err := schema.NewMigrate(drv,
		schema.WithDir(dir),
		schema.WithMigrationMode(schema.ModeReplay),
		schema.WithDialect(dialectName),
		schema.WithFormatter(sqltool.GolangMigrateFormatter),
		schema.WithDropColumn(true),
		schema.WithDropIndex(true),
		// The hand-written partitioning of usage_logs (PostgreSQL) is no difference.
		migrate.IgnorePartitions(),
	)
	if err != nil {
		return err
	}
	if err := m.NamedDiff(ctx, name, entmigrate.Tables...); err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	return nil
}
