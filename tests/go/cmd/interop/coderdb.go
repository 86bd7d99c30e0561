package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	// coderd's PostgreSQL driver (Coder's fork, through go.mod's replace), registered as "postgres".
	_ "github.com/lib/pq"

	"github.com/coder/coder/v2/coderd/database/migrations"
)

// coderdb works on a database with Coder v2.30.0's own schema, with Coder's own packages: it migrates one, seeds
// a deployment into it, reads back an agent's rows as coderd decodes them, listens on coderd's pubsub, and names
// coderd's channels. agentwire's backend on Coder's schema is tested against it. See README.md.
func coderdb(args []string) int {
	if len(args) < 1 {
		coderdbUsage()
		return exitUsage
	}
	switch args[0] {
	case "migrate":
		return coderdbMigrate(args[1:])
	case "seed":
		return coderdbSeed(args[1:])
	case "read":
		return coderdbRead(args[1:])
	case "listen":
		return coderdbListen(args[1:])
	case "channels":
		return coderdbChannels(args[1:])
	case "bulk":
		return coderdbBulk(args[1:])
	case "manifest":
		return coderdbManifest(args[1:])
	default:
		fmt.Fprintf(os.Stderr, "coderdb: unknown verb %q\n", args[0])
		coderdbUsage()
		return exitUsage
	}
}

func coderdbUsage() {
	fmt.Fprint(os.Stderr, `usage:
  interop coderdb migrate --postgres-url URL
  interop coderdb seed --postgres-url URL [--agents N] [--with-deleted-workspace] [--username NAME]
  interop coderdb read --postgres-url URL --agent-id ID [--inactive-timeout D]
  interop coderdb listen --postgres-url URL --channel NAME [--count N] [--timeout D]
  interop coderdb channels --owner-id U --agent-id A [--workspace-id W]
`)
}

// openCoderDB opens the database as coderd does (database/sql on Coder's lib/pq fork) and checks it answers.
func openCoderDB(rawURL string) (*sql.DB, error) {
	db, err := sql.Open("postgres", pqURL(rawURL))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return db, nil
}

// pqURL gives a URL without sslmode libpq's default, "prefer" without a server certificate to check, which is what
// agentwire's driver does with it; lib/pq would require TLS, which the test cluster does not offer.
func pqURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Query().Has("sslmode") {
		return rawURL
	}
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// coderdbMigrate runs coderd's migrations, then coderd's own startup check that none is left, as `coder server`
// does before serving.
func coderdbMigrate(args []string) int {
	fs := flag.NewFlagSet("coderdb migrate", flag.ContinueOnError)
	pgURL := fs.String("postgres-url", "", "PostgreSQL URL of an empty database")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *pgURL == "" {
		fmt.Fprintln(os.Stderr, "coderdb migrate: --postgres-url is required")
		return exitUsage
	}
	db, err := openCoderDB(*pgURL)
	if err != nil {
		return coderdbFail("migrate", err)
	}
	defer db.Close()
	if err := migrations.Up(db); err != nil {
		return coderdbFail("migrate", err)
	}
	if err := migrations.EnsureClean(db); err != nil {
		return coderdbFail("migrate", err)
	}
	// golang-migrate's table, which EnsureClean has just found clean and at the last migration.
	var version int64
	var dirty bool
	if err := db.QueryRow("SELECT version, dirty FROM schema_migrations").Scan(&version, &dirty); err != nil {
		return coderdbFail("migrate", err)
	}
	return coderdbPrint("migrate", map[string]any{
		"schema_migrations": map[string]any{"version": version, "dirty": dirty},
		"migrations_hash":   migrations.GetMigrationsHash(),
	})
}

// coderdbFail prints the error as the one JSON line and to stderr, and returns the failure status.
func coderdbFail(verb string, err error) int {
	fmt.Fprintf(os.Stderr, "coderdb %s: %v\n", verb, err)
	line, _ := json.Marshal(map[string]any{"error": err.Error()})
	fmt.Println(string(line))
	return exitFail
}

func coderdbPrint(verb string, v any) int {
	line, err := json.Marshal(v)
	if err != nil {
		return coderdbFail(verb, err)
	}
	fmt.Println(string(line))
	return exitOK
}
