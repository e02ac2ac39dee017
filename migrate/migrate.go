// Package migrate holds the versioned SQL migrations of each dialect (generated from
// the ent schema by ./migrate/gen) and applies them at start-up with golang-migrate.
package migrate

import (
	"database/sql"
	"embed"
	"errors"
	"fmt"

	gm "github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/database/postgres"
	"github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

//go:embed sqlite/*.sql postgres/*.sql
var files embed.FS

// Apply brings db up to the newest migration of dialect ("sqlite" or "postgres") and
// returns how many migrations it applied (0 when the schema is current).
// On PostgreSQL an advisory lock makes concurrent starts safe.
// It returns an error if a migration fails or the database is marked dirty by an
// earlier failed run.
func Apply(db *sql.DB, dialect string) (applied int, err error) {
	var drv database.Driver
	switch dialect {
	case "sqlite":
		drv, err = sqlite.WithInstance(db, &sqlite.Config{})
	case "postgres":
		drv, err = postgres.WithInstance(db, &postgres.Config{})
	default:
		return 0, fmt.Errorf("migrate: unknown dialect %q", dialect)
	}
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	src, err := iofs.New(files, dialect)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	m, err := gm.NewWithInstance("iofs", src, dialect, drv)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	before, _, err := m.Version()
	if err != nil && !errors.Is(err, gm.ErrNilVersion) {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	if err := m.Up(); err != nil && !errors.Is(err, gm.ErrNoChange) {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	after, _, err := m.Version()
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	return countBetween(dialect, before, after)
}

// countBetween counts the migrations with versions in (from, to].
func countBetween(dialect string, from, to uint) (int, error) {
	src, err := iofs.New(files, dialect)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	n := 0
	v, err := src.First()
	for err == nil {
		if v > from && v <= to {
			n++
		}
		v, err = src.Next(v)
	}
	return n, nil
}
