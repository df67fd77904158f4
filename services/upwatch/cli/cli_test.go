package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"upwatch.dev/shared/natstest"
	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// result is one in-process run of the command line.
type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"help"}, {"frobnicate"}} {
		r := runCLI(t, args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Commands:") || !strings.Contains(r.stderr, "monitors") {
			t.Errorf("upwatch %v: code %d, stderr %q; want usage and exit 2", args, r.code, r.stderr)
		}
	}
	if r := runCLI(t, "frobnicate"); !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command not named: %q", r.stderr)
	}
	if r := runCLI(t, "monitors", "frob"); r.code != exitUsage {
		t.Errorf("monitors frob: code %d, want 2", r.code)
	}
	if r := runCLI(t, "up", "--no-such-flag"); r.code != exitUsage {
		t.Errorf("up --no-such-flag: code %d, want 2", r.code)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "upwatch dev (go") {
		t.Fatalf("version: code %d, stdout %q", r.code, r.stdout)
	}
}

var dbSerial atomic.Int64

// emptyDB creates a database with no schema at all, dropped at the end.
func emptyDB(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	srv := pgtest.Server()
	name := fmt.Sprintf("cli_empty_%d_%d", os.Getpid(), dbSerial.Add(1))
	conn, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, srv.URL("postgres"))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return srv.URL(name)
}

func TestMigrate(t *testing.T) {
	t.Parallel()

	t.Run("Idempotent", func(t *testing.T) {
		t.Parallel()
		url := emptyDB(t)
		r := runCLI(t, "migrate", "--database-url", url)
		if r.code != 0 || !strings.Contains(r.stdout, "applied migration 001") {
			t.Fatalf("first migrate: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		want := fmt.Sprintf("up to date at version %d\n", store.LatestVersion())
		for range 2 {
			r = runCLI(t, "migrate", "--database-url", url)
			if r.code != 0 || r.stdout != want {
				t.Fatalf("migrate again: code %d, stdout %q (want %q), stderr %q", r.code, r.stdout, want, r.stderr)
			}
		}
	})

	t.Run("NoDatabaseIsAUsageError", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, "migrate", "--database-url", "")
		if r.code != exitUsage || !strings.Contains(r.stderr, "DATABASE_URL") {
			t.Fatalf("code %d, stderr %q", r.code, r.stderr)
		}
	})
}

func TestMonitors(t *testing.T) {
	t.Parallel()

	// setup gives a migrated database and a NATS server with the streams.
	setup := func(t *testing.T) (dbURL, natsURL string, st *store.Store) {
		t.Helper()
		st, dbURL = pgtest.NewStore(t)
		ns := natstest.Start(t, natstest.Options{})
		_, js := natstest.Connect(t, ns)
		if err := queue.Ensure(context.Background(), js, queue.DefaultOptions()); err != nil {
			t.Fatalf("ensure streams: %v", err)
		}
		return dbURL, ns.ClientURL(), st
	}

	t.Run("AddListRemove", func(t *testing.T) {
		t.Parallel()
		db, nurl, st := setup(t)
		r := runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "web", "--kind", "http", "--target", "http://127.0.0.1:1/", "--interval", "30s",
			"--retry-interval", "10s", "--timeout", "2s", "--method", "head", "--expect", "200,204")
		if r.code != 0 {
			t.Fatalf("add: code %d, stderr %q", r.code, r.stderr)
		}
		var id int64
		if _, err := fmt.Sscan(r.stdout, &id); err != nil || id <= 0 {
			t.Fatalf("add printed %q; want the new id", r.stdout)
		}
		m, err := st.GetMonitor(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Name != "web" || m.Settings.HTTP == nil || m.Settings.HTTP.Method != http.MethodHead ||
			len(m.Settings.HTTP.ExpectedStatus) != 2 || m.Timeout.Seconds() != 2 || m.RetryInterval.Seconds() != 10 {
			t.Errorf("stored monitor = %+v (http %+v)", m, m.Settings.HTTP)
		}
		r = runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "port", "--kind", "tcp", "--target", "127.0.0.1:9", "--interval", "1m")
		if r.code != 0 {
			t.Fatalf("add tcp: code %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "asleep", "--kind", "tcp", "--target", "127.0.0.1:9", "--interval", "1m", "--paused")
		if r.code != 0 {
			t.Fatalf("add paused: code %d, stderr %q", r.code, r.stderr)
		}

		r = runCLI(t, "monitors", "list", "--database-url", db)
		if r.code != 0 {
			t.Fatalf("list: code %d, stderr %q", r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LAST ERROR") ||
			!strings.Contains(lines[0], "LANE") ||
			!strings.Contains(lines[1], "web") || !strings.Contains(lines[1], "30s (10s failing)") ||
			!strings.Contains(lines[1], "scheduled") ||
			!strings.Contains(lines[2], "127.0.0.1:9") || !strings.Contains(lines[2], "1m0s") || !strings.Contains(lines[2], "scheduled") ||
			!strings.Contains(lines[3], "paused") || strings.Contains(lines[3], "scheduled") {
			t.Errorf("list table:\n%s", r.stdout)
		}

		r = runCLI(t, "monitors", "list", "--json", "--database-url", db)
		var listed []monitorJSON
		if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 3 {
			t.Fatalf("list --json: %v, %q", err, r.stdout)
		}
		if listed[0].ID != id || listed[0].IntervalSeconds != 30 || listed[1].Kind != "tcp" ||
			listed[0].RetryIntervalSeconds == nil || *listed[0].RetryIntervalSeconds != 10 ||
			listed[1].RetryIntervalSeconds != nil || listed[0].Lane != "scheduled" {
			t.Errorf("list --json = %+v", listed)
		}
		if !strings.Contains(r.stdout, `"retry_interval_seconds": null`) || !strings.Contains(r.stdout, `"lane": "scheduled"`) {
			t.Errorf("list --json:\n%s", r.stdout)
		}

		// By id, then by name.
		r = runCLI(t, "monitors", "rm", "--database-url", db, "--nats-url", nurl, fmt.Sprint(id))
		if r.code != 0 || !strings.Contains(r.stdout, "removed monitor") {
			t.Fatalf("rm by id: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "monitors", "rm", "--database-url", db, "--nats-url", nurl, "port")
		if r.code != 0 || !strings.Contains(r.stdout, "(port)") {
			t.Fatalf("rm by name: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "monitors", "rm", "--database-url", db, "--nats-url", nurl, "asleep")
		if r.code != 0 {
			t.Fatalf("rm paused: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		mons, err := st.ListMonitors(context.Background())
		if err != nil || len(mons) != 0 {
			t.Fatalf("after rm: %d monitors, %v", len(mons), err)
		}
		r = runCLI(t, "monitors", "rm", "--database-url", db, "--nats-url", nurl, "port")
		if r.code != exitError || !strings.Contains(r.stderr, `no monitor has id or name "port"`) {
			t.Fatalf("rm missing: code %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("InvalidMonitorNamesTheField", func(t *testing.T) {
		t.Parallel()
		db, nurl, _ := setup(t)
		r := runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "bad", "--kind", "tcp", "--target", "nowhere", "--interval", "30s")
		if r.code != exitError || !strings.Contains(r.stderr, "target: must be host:port") {
			t.Fatalf("code %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "bad", "--kind", "tcp", "--target", "h:1", "--expect", "200")
		if r.code != exitUsage {
			t.Fatalf("--expect on tcp: code %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "bad", "--kind", "tcp", "--target", "h:1", "--retry-interval", "soon")
		if r.code != exitUsage || !strings.Contains(r.stderr, `--retry-interval "soon" is not a duration`) {
			t.Fatalf("--retry-interval soon: code %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", nurl,
			"--name", "bad", "--kind", "tcp", "--target", "h:1", "--retry-interval", "500ms")
		if r.code != exitError || !strings.Contains(r.stderr, "retry_interval_seconds: must be at least 1") {
			t.Fatalf("--retry-interval 500ms: code %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("WorksWithoutNATS", func(t *testing.T) {
		t.Parallel()
		db, _, st := setup(t)
		// Port 1 on loopback refuses at once: nothing listens there.
		r := runCLI(t, "monitors", "add", "--database-url", db, "--nats-url", "nats://127.0.0.1:1",
			"--name", "solo", "--kind", "tcp", "--target", "127.0.0.1:9", "--interval", "30s")
		if r.code != 0 || !strings.Contains(r.stderr, "warning: NATS at nats://127.0.0.1:1 not reachable") {
			t.Fatalf("add: code %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "monitors", "rm", "--database-url", db, "--nats-url", "nats://127.0.0.1:1", "solo")
		if r.code != 0 {
			t.Fatalf("rm: code %d, stderr %q", r.code, r.stderr)
		}
		if mons, _ := st.ListMonitors(context.Background()); len(mons) != 0 {
			t.Fatalf("monitor still there: %+v", mons)
		}
	})
}
