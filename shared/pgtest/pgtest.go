// Package pgtest gives each test its own migrated database on one private
// PostgreSQL server per test binary.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"upwatch.dev/shared/localpg"
	"upwatch.dev/shared/store"
)

const template = "upwatch_template"

var (
	server *localpg.Server
	serial atomic.Int64
	mu     sync.Mutex // CREATE DATABASE … TEMPLATE wants the template alone
)

// Main starts the server, runs the tests and stops the server. Call it from
// TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "upwatch-pgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server, err = localpg.Start(ctx, localpg.Options{Dir: dir, Database: template})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: start postgres:", err)
		return 1
	}
	defer server.Stop()
	st, err := store.Open(ctx, server.URL(template), 2)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	if _, err := st.Migrate(ctx); err != nil {
		st.Close()
		fmt.Fprintln(os.Stderr, "pgtest: migrate template:", err)
		return 1
	}
	if err := st.EnsurePartitions(ctx, time.Now().AddDate(0, 0, -1), 3); err != nil {
		st.Close()
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	st.Close()
	return m.Run()
}

// Server is the running server (for tests that stop and start it).
func Server() *localpg.Server { return server }

// NewDB creates a fresh migrated database and returns its URL. The
// database is dropped when the test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	if server == nil {
		t.Fatal("pgtest: no server; call pgtest.Main from TestMain")
	}
	ctx := context.Background()
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), serial.Add(1))
	conn, err := pgx.Connect(ctx, server.URL("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	mu.Lock()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+template)
	mu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, server.URL("postgres"))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return server.URL(name)
}

// NewStore opens a store on a fresh database, closed when the test ends.
func NewStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	url := NewDB(t)
	st, err := store.Open(context.Background(), url, 8)
	if err != nil {
		t.Fatalf("pgtest: open store: %v", err)
	}
	t.Cleanup(st.Close)
	return st, url
}
