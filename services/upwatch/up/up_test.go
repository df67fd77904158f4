package up

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"upwatch.dev/services/upwatch/config"
	"upwatch.dev/shared/localpg"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dataDir is a fresh data directory the postgres user can enter (a
// t.TempDir is private to root, and as root PostgreSQL runs as postgres).
func dataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "upwatch-up-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// tWriter sends log lines to the test's log, shown on failure or with -v.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// instance is one running `upwatch up`.
type instance struct {
	addrs  Addrs
	cancel context.CancelFunc
	errc   chan error
}

func start(t *testing.T, o Options) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Addrs, 1)
	o.Ready = func(a Addrs) { ready <- a }
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	in := &instance{cancel: cancel, errc: make(chan error, 1)}
	go func() { in.errc <- Run(ctx, o) }()
	select {
	case in.addrs = <-ready:
	case err := <-in.errc:
		cancel()
		t.Fatalf("up exited during start: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("up not ready within 2m")
	}
	return in
}

// stop cancels the run, as Ctrl-C would, and expects a clean exit.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cancel()
	select {
	case err := <-in.errc:
		if err != nil {
			t.Fatalf("up did not stop cleanly: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("up did not stop within 1m")
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type apiMonitor struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
}

func findMonitor(base, name string) (apiMonitor, error) {
	var list struct {
		Monitors []apiMonitor `json:"monitors"`
	}
	if err := getJSON(base+"/api/v1/monitors", &list); err != nil {
		return apiMonitor{}, err
	}
	for _, m := range list.Monitors {
		if m.Name == name {
			return m, nil
		}
	}
	return apiMonitor{}, fmt.Errorf("monitor %q not listed (%d monitors)", name, len(list.Monitors))
}

type apiResult struct {
	Status string `json:"status"`
}

func listResults(base string, id int64) ([]apiResult, error) {
	var body struct {
		Results []apiResult `json:"results"`
	}
	err := getJSON(fmt.Sprintf("%s/api/v1/monitors/%d/results", base, id), &body)
	return body.Results, err
}

func TestUpSmoke(t *testing.T) {
	if _, err := localpg.FindBinDir(); err != nil {
		t.Fatalf("this test needs PostgreSQL's server binaries (run `make setup`): %v", err)
	}
	t.Parallel()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer target.Close()
	specs, err := config.Parse([]byte(fmt.Sprintf(`
monitors:
  - name: smoke
    kind: http
    target: %s/
    interval: 1s
    timeout: 2s
`, target.URL)))
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	var out strings.Builder
	opts := Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSListen: "127.0.0.1:0", Monitors: specs, Out: &out}

	in := start(t, opts)
	base := "http://" + in.addrs.HTTP
	for _, want := range []string{"monitors from config: 1 created, 0 updated", base + "/", "curl " + base + "/api/v1/monitors",
		"nats stream info CHECKS --server " + in.addrs.NATSURL, "DATABASE_URL: " + in.addrs.DatabaseURL} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("start-up summary lacks %q:\n%s", want, out.String())
		}
	}
	var mon apiMonitor
	eventually(t, time.Minute, "a stored result of the smoke monitor", func() (bool, error) {
		m, err := findMonitor(base, "smoke")
		if err != nil {
			return false, err
		}
		mon = m
		rs, err := listResults(base, m.ID)
		if err != nil {
			return false, err
		}
		return len(rs) > 0 && rs[0].Status == "up", fmt.Errorf("results %+v", rs)
	})
	for _, path := range []string{"/healthz", "/metrics", "/"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s: %s", path, resp.Status, body)
		}
		if path == "/metrics" && !strings.Contains(string(body), "upwatch_api_requests_total") {
			t.Errorf("/metrics lacks the api's metrics")
		}
	}
	in.stop(t)

	// Same data directory, no config file: the monitor and its history are
	// still there, and checks go on.
	out.Reset()
	opts.Monitors = nil
	in = start(t, opts)
	base = "http://" + in.addrs.HTTP
	m, err := findMonitor(base, "smoke")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if m.ID != mon.ID {
		t.Errorf("after restart the monitor has id %d, want %d", m.ID, mon.ID)
	}
	before, err := listResults(base, m.ID)
	if err != nil || len(before) == 0 {
		t.Fatalf("after restart: results %v, %v; want the stored ones", before, err)
	}
	eventually(t, time.Minute, "a new result after restart", func() (bool, error) {
		rs, err := listResults(base, m.ID)
		return err == nil && len(rs) > len(before), err
	})
	in.stop(t)
}

func TestStartErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	logger := slog.New(slog.DiscardHandler)

	t.Run("BusyHTTPPort", func(t *testing.T) {
		err := Run(context.Background(), Options{DataDir: dataDir(t), HTTPAddr: busy.Addr().String(),
			NATSListen: "127.0.0.1:0", Logger: logger})
		var se *StartError
		if !errors.As(err, &se) || !strings.Contains(se.Msg, "choose another address with --http") {
			t.Fatalf("err = %v; want a StartError about the busy HTTP port", err)
		}
	})

	t.Run("BusyNATSPort", func(t *testing.T) {
		err := Run(context.Background(), Options{DataDir: dataDir(t), HTTPAddr: "127.0.0.1:0",
			NATSListen: busy.Addr().String(), Logger: logger})
		var se *StartError
		if !errors.As(err, &se) || !strings.Contains(se.Msg, "--nats-listen") {
			t.Fatalf("err = %v; want a StartError about the busy NATS port", err)
		}
	})

	t.Run("NoPostgreSQL", func(t *testing.T) {
		t.Setenv("PG_BIN_DIR", "/nonexistent")
		err := Run(context.Background(), Options{DataDir: dataDir(t), HTTPAddr: "127.0.0.1:0",
			NATSListen: "127.0.0.1:0", Logger: logger})
		var se *StartError
		if !errors.As(err, &se) || !errors.Is(err, localpg.ErrNoBinaries) || !strings.Contains(se.Msg, "make setup") {
			t.Fatalf("err = %v; want a StartError saying how to install PostgreSQL", err)
		}
	})

	t.Run("BadRegion", func(t *testing.T) {
		err := Run(context.Background(), Options{DataDir: dataDir(t), HTTPAddr: "127.0.0.1:0",
			NATSListen: "127.0.0.1:0", Region: "eu west", Logger: logger})
		var se *StartError
		if !errors.As(err, &se) {
			t.Fatalf("err = %v; want a StartError", err)
		}
	})
}
