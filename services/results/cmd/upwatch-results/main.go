// Command upwatch-results stores check outcomes: it consumes RESULTS in
// batches and writes results, monitor state and next_check_at to
// PostgreSQL. Several may run; they share one consumer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"

	"github.com/oklog/run"

	"upwatch.dev/services/results/results"
	"upwatch.dev/shared/service"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "upwatch-results:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var cfg service.Config
	rcfg := results.DefaultConfig()
	fs := flag.NewFlagSet("upwatch-results", flag.ExitOnError)
	cfg.RegisterFlags(fs, "127.0.0.1:9103")
	fs.IntVar(&rcfg.BatchSize, "batch", rcfg.BatchSize, "most outcomes written in one statement")
	fs.DurationVar(&rcfg.BatchWait, "batch-wait", rcfg.BatchWait, "longest a batch waits to fill")
	fs.DurationVar(&rcfg.Retention, "retention", rcfg.Retention, "how long result rows are kept (whole days; 0 keeps them forever)")
	_ = fs.Parse(os.Args[1:])

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deps, err := service.Connect(ctx, cfg, "upwatch-results", true)
	if err != nil {
		return err
	}
	defer deps.Close()
	logger := deps.Logger
	admin, err := service.Listen(cfg.HTTPAddr, service.AdminHandler(deps.Registry, deps.Health))
	if err != nil {
		return err
	}

	var g run.Group
	// Signals: SIGINT or SIGTERM stops the group.
	g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	// Results: on stop, the batch being written is written and acked first.
	{
		s := results.New(rcfg, deps.Store, deps.JS, logger.With("component", "results"), deps.Registry)
		sctx, scancel := context.WithCancel(ctx)
		g.Add(func() error { return s.Run(sctx) }, func(error) {
			logger.Info("stopping results service")
			scancel()
		})
	}
	// Admin: /healthz and /metrics.
	g.Add(admin.Serve, func(error) { admin.Shutdown() })

	err = g.Run()
	logger.Info("results service stopped")
	var sig run.SignalError
	if errors.As(err, &sig) {
		return nil
	}
	return err
}
