// Command upwatch-api serves upwatch's REST API and dashboard, with
// /healthz and /metrics on the same listener.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"

	"upwatch.dev/services/api/api"
	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/service"
	"upwatch.dev/shared/store"
)

func main() {
	if err := runAPI(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "upwatch-api:", err)
		os.Exit(1)
	}
}

func runAPI(args []string) error {
	fs := flag.NewFlagSet("upwatch-api", flag.ContinueOnError)
	var cfg service.Config
	cfg.RegisterFlags(fs, "127.0.0.1:8080")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("no database: set --database-url or DATABASE_URL")
	}
	logger, err := service.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}

	st, err := store.Open(context.Background(), cfg.DatabaseURL, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, err := service.ConnectNATS(cfg.NATSURL, "upwatch-api", logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	// Set-up waits for the database schema and the streams; a signal
	// during the wait is a clean exit, not an error.
	setupCtx, stopSetup := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = setUp(setupCtx, st, js, cfg.Streams, logger)
	interrupted := setupCtx.Err() != nil
	stopSetup()
	if interrupted {
		logger.Info("interrupted during start-up")
		return nil
	}
	if err != nil {
		return err
	}

	mgr, err := manage.New(st, nc, logger.With("component", "manage"))
	if err != nil {
		return fmt.Errorf("build monitor manager: %w", err)
	}
	reg := service.NewRegistry()
	admin := service.AdminHandler(reg, map[string]service.HealthCheck{
		"database": st.Ping,
		"nats":     service.NATSHealth(nc),
	})
	mux := http.NewServeMux()
	mux.Handle("/healthz", admin)
	mux.Handle("/metrics", admin)
	mux.Handle("/", api.New(st, mgr, logger, reg, api.WithJetStream(js)))
	srv, err := service.Listen(cfg.HTTPAddr, mux)
	if err != nil {
		return err
	}

	var g run.Group
	{
		// Stop on Ctrl-C or SIGTERM.
		g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	}
	{
		// Serve the API, the dashboard, /healthz and /metrics until
		// interrupted, letting in-flight requests finish.
		g.Add(func() error {
			logger.Info("http server listening", "addr", srv.Addr())
			return srv.Serve()
		}, func(error) {
			logger.Info("stopping http server")
			srv.Shutdown()
			logger.Info("http server stopped")
		})
	}
	err = g.Run()
	if errors.Is(err, run.ErrSignal) {
		logger.Info("shutting down", "reason", err)
		return nil
	}
	return err
}

// setUp waits until the database carries this binary's schema and NATS
// accepts the stream definitions, so the API never writes monitors the
// queue cannot yet serve.
func setUp(ctx context.Context, st *store.Store, js jetstream.JetStream, streams queue.Options, logger *slog.Logger) error {
	if err := st.WaitForSchema(ctx, logger); err != nil {
		return fmt.Errorf("wait for database schema: %w", err)
	}
	// The connection retries in the background while NATS is down, so keep
	// trying until it is reachable instead of failing the start.
	var lastLogged time.Time
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := queue.Ensure(attemptCtx, js, streams)
		cancel()
		if err == nil {
			return nil
		}
		if time.Since(lastLogged) > 10*time.Second {
			logger.Warn("waiting for nats to set up streams", "err", err)
			lastLogged = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
