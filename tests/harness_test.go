package tests

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"upwatch.dev/services/checker/checker"
	"upwatch.dev/services/results/results"
	"upwatch.dev/services/ticker/ticker"
	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/natstest"
	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// system is one upwatch installation inside the test process: a real
// embedded NATS server, a real PostgreSQL database, and services started
// and stopped one by one as goroutines.
type system struct {
	t      *testing.T
	ns     *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	st     *store.Store
	dbURL  string
	mgr    *manage.Manager
	logger *slog.Logger
}

func newSystem(t *testing.T) *system {
	t.Helper()
	ns := natstest.Start(t, natstest.Options{})
	nc, js := natstest.Connect(t, ns)
	st, url := pgtest.NewStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, queue.Ensure(ctx, js, queue.DefaultOptions()))
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr, err := manage.New(st, nc, logger)
	require.NoError(t, err)
	return &system{t: t, ns: ns, nc: nc, js: js, st: st, dbURL: url, mgr: mgr, logger: logger}
}

// testWriter sends service logs to the test log, shown on failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// actor is a running service; stop cancels it and waits for it to return.
type actor struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (a *actor) stop() error {
	var err error
	a.once.Do(func() {
		a.cancel()
		err = <-a.done
	})
	return err
}

func (s *system) start(run func(ctx context.Context) error) *actor {
	ctx, cancel := context.WithCancel(context.Background())
	a := &actor{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- run(ctx) }()
	s.t.Cleanup(func() { _ = a.stop() })
	return a
}

func (s *system) startTicker(tick time.Duration) *actor {
	a, _ := s.startTickerWithMetrics(tick)
	return a
}

func (s *system) startTickerWithMetrics(tick time.Duration) (*actor, *prometheus.Registry) {
	return s.startTickerWith(func(cfg *ticker.Config) { cfg.Tick = tick })
}

func (s *system) startTickerWith(change func(*ticker.Config)) (*actor, *prometheus.Registry) {
	cfg := ticker.DefaultConfig()
	change(&cfg)
	reg := prometheus.NewRegistry()
	tk := ticker.New(cfg, s.st, s.js, s.logger, reg)
	return s.start(tk.Run), reg
}

func (s *system) startChecker() *actor {
	a, _ := s.startCheckerWithMetrics()
	return a
}

func (s *system) startCheckerWithMetrics() (*actor, *prometheus.Registry) {
	cfg := checker.DefaultConfig()
	cfg.ShutdownTimeout = 5 * time.Second
	reg := prometheus.NewRegistry()
	c := checker.New(cfg, s.nc, s.js, s.logger, reg)
	return s.start(c.Run), reg
}

func (s *system) startResults() (*actor, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	cfg := results.DefaultConfig()
	cfg.BatchWait = 100 * time.Millisecond
	r := results.New(cfg, s.st, s.js, s.logger, reg)
	return s.start(r.Run), reg
}

func (s *system) addMonitor(name, kind, target string, interval, timeout time.Duration) store.Monitor {
	s.t.Helper()
	m, err := s.mgr.Create(context.Background(), monitor.Spec{
		Name: name, Kind: kind, Target: target, Interval: interval, Timeout: timeout, Enabled: true,
	})
	require.NoError(s.t, err)
	return m
}

// checksPending is the number of messages in CHECKS.
func (s *system) checksPending() uint64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := s.js.Stream(ctx, queue.ChecksStream)
	require.NoError(s.t, err)
	info, err := stream.Info(ctx)
	require.NoError(s.t, err)
	return info.State.Msgs
}

func (s *system) count(sql string, args ...any) int {
	s.t.Helper()
	var n int
	require.NoError(s.t, s.st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// eventually polls cond every 50 ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// target is a local HTTP server that counts requests per path.
type target struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
	n    atomic.Int64
}

func newTarget(t *testing.T, h http.HandlerFunc) *target {
	tg := &target{hits: map[string]int{}}
	tg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.mu.Lock()
		tg.hits[r.URL.Path]++
		tg.mu.Unlock()
		tg.n.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) hitsOf(path string) int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.hits[path]
}

func (tg *target) url(path string) string { return tg.URL + path }

func monitorPath(i int) string { return fmt.Sprintf("/m/%d", i) }
