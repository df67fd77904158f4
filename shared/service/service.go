// Package service holds what every upwatch service is wired with: common
// configuration, the logger, the NATS connection and the admin endpoints
// (/healthz and /metrics).
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// Env returns the environment variable key, or def when it is unset.
func Env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// Config is the configuration every service shares.
type Config struct {
	NATSURL     string
	DatabaseURL string
	Region      string
	HTTPAddr    string
	LogLevel    string
	LogFormat   string
	Streams     queue.Options
}

// RegisterFlags binds the shared configuration to flags, each falling back
// to its environment variable.
func (c *Config) RegisterFlags(fs *flag.FlagSet, defaultHTTP string) {
	fs.StringVar(&c.NATSURL, "nats-url", Env("NATS_URL", nats.DefaultURL), "NATS server URL(s), comma separated (env NATS_URL)")
	fs.StringVar(&c.DatabaseURL, "database-url", Env("DATABASE_URL", ""), "PostgreSQL connection URL (env DATABASE_URL)")
	fs.StringVar(&c.Region, "region", Env("REGION", "default"), "region this service serves (env REGION)")
	fs.StringVar(&c.HTTPAddr, "http-addr", Env("HTTP_ADDR", defaultHTTP), "address for /healthz and /metrics, and for upwatch-api the API and dashboard too (env HTTP_ADDR)")
	fs.StringVar(&c.LogLevel, "log-level", Env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", Env("LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	c.Streams.RegisterFlags(fs, Env)
}

// NewLogger builds the one logger of a process.
func NewLogger(level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// ConnectNATS connects and keeps reconnecting forever: a NATS restart must
// not take a service down.
func ConnectNATS(url, name string, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Warn("nats error", "subject", subject, "err", err)
		}),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

// NewRegistry is a metrics registry with the Go runtime and process
// collectors, one per process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// HealthCheck reports whether one dependency is usable.
type HealthCheck func(ctx context.Context) error

// NATSHealth fails while the connection is down.
func NATSHealth(nc *nats.Conn) HealthCheck {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats: %s", nc.Status())
		}
		return nil
	}
}

// AdminHandler serves /healthz (200 when every check passes, 503 with the
// failures otherwise) and /metrics.
func AdminHandler(reg *prometheus.Registry, checks map[string]HealthCheck) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// Profiles, for finding what a loaded service spends its CPU on. The
	// admin address is loopback by default.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var failures []string
		for name, check := range checks {
			if err := check(ctx); err != nil {
				failures = append(failures, name+": "+err.Error())
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(failures) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(failures, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// HTTPServer is an HTTP server that runs as a run-group actor.
type HTTPServer struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr now, so a busy port is reported at start with a clear
// message rather than from inside the run group.
func Listen(addr string, h http.Handler) (*HTTPServer, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (is another process using it? choose another with --http-addr or HTTP_ADDR): %w", addr, err)
	}
	return &HTTPServer{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		ln:  ln,
	}, nil
}

// Addr is the bound address (useful with port 0).
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Serve runs until Shutdown.
func (s *HTTPServer) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server on %s: %w", s.Addr(), err)
	}
	return nil
}

// Shutdown lets in-flight requests finish for up to 5 s.
func (s *HTTPServer) Shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// EnsureStreams creates or updates the streams, retrying until NATS answers
// or ctx ends: a service started before NATS waits for it.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o queue.Options, logger *slog.Logger) error {
	var lastLogged time.Time
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := queue.Ensure(attemptCtx, js, o)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(lastLogged) > 10*time.Second {
			logger.Warn("waiting for NATS JetStream", "err", err)
			lastLogged = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Deps are the connections a service runs on.
type Deps struct {
	Logger   *slog.Logger
	NC       *nats.Conn
	JS       jetstream.JetStream
	Store    *store.Store // nil for services without a database
	Registry *prometheus.Registry
	Health   map[string]HealthCheck
}

// Connect builds the logger and opens the connections of a service named
// name. With needDB it opens the database too and waits until its schema is
// migrated. It then makes sure the streams exist. Close releases them.
func Connect(ctx context.Context, cfg Config, name string, needDB bool) (*Deps, error) {
	logger, err := NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return nil, err
	}
	logger = logger.With("service", name)
	if !monitor.ValidRegion(cfg.Region) {
		return nil, fmt.Errorf("region %q: must be letters, digits, '-' or '_'", cfg.Region)
	}
	d := &Deps{Logger: logger, Registry: NewRegistry(), Health: map[string]HealthCheck{}}
	d.NC, err = ConnectNATS(cfg.NATSURL, name, logger)
	if err != nil {
		return nil, err
	}
	d.Health["nats"] = NATSHealth(d.NC)
	d.JS, err = jetstream.New(d.NC)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if needDB {
		if cfg.DatabaseURL == "" {
			d.Close()
			return nil, errors.New("no database: set DATABASE_URL or --database-url")
		}
		d.Store, err = store.Open(ctx, cfg.DatabaseURL, 0)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.Health["postgres"] = d.Store.Ping
		if err := d.Store.WaitForSchema(ctx, logger); err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := EnsureStreams(ctx, d.JS, cfg.Streams, logger); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close drains NATS (flushing pending publishes and acks) and closes the
// database pool.
func (d *Deps) Close() {
	if d.NC != nil {
		_ = d.NC.Drain()
		for i := 0; i < 50 && !d.NC.IsClosed(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		d.NC.Close()
	}
	if d.Store != nil {
		d.Store.Close()
	}
}

// Worker is the long-running part of a service; Run returns when ctx ends.
type Worker interface {
	Run(ctx context.Context) error
}

// Main runs a service that is one worker: it connects (and, with needDB,
// waits for the migrated database), serves /healthz and /metrics on
// cfg.HTTPAddr, and runs the worker until SIGINT or SIGTERM, when the worker
// is stopped and given the chance to finish or hand back what it holds.
// build makes the worker from the connections.
func Main(cfg Config, name string, needDB bool, build func(*Deps) Worker) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deps, err := Connect(ctx, cfg, name, needDB)
	if err != nil {
		return err
	}
	defer deps.Close()
	logger := deps.Logger
	admin, err := Listen(cfg.HTTPAddr, AdminHandler(deps.Registry, deps.Health))
	if err != nil {
		return err
	}

	var g run.Group
	// Signals: SIGINT or SIGTERM stops the group.
	g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	// The worker: on stop, it finishes or hands back what it holds.
	{
		w := build(deps)
		wctx, wcancel := context.WithCancel(ctx)
		g.Add(func() error { return w.Run(wctx) }, func(error) {
			logger.Info("stopping " + name)
			wcancel()
		})
	}
	// Admin: /healthz and /metrics.
	g.Add(admin.Serve, func(error) { admin.Shutdown() })

	err = g.Run()
	logger.Info(name + " stopped")
	var sig run.SignalError
	if errors.As(err, &sig) {
		return nil
	}
	return err
}
