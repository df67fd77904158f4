// Command upwatch-ticker is the scheduler: it claims due monitors from
// PostgreSQL and publishes one check message per due slot to CHECKS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/oklog/run"

	"upwatch.dev/services/ticker/ticker"
	"upwatch.dev/shared/service"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "upwatch-ticker:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var cfg service.Config
	tcfg := ticker.DefaultConfig()
	fs := flag.NewFlagSet("upwatch-ticker", flag.ExitOnError)
	cfg.RegisterFlags(fs, "127.0.0.1:9101")
	fs.DurationVar(&tcfg.Tick, "tick", envDuration("TICK", tcfg.Tick), "how often due monitors are claimed (env TICK)")
	fs.IntVar(&tcfg.Batch, "batch", tcfg.Batch, "most monitors claimed by one statement")
	fs.DurationVar(&tcfg.MinLease, "min-lease", tcfg.MinLease, "shortest wait for an outcome before a slot is dispatched again")
	fs.DurationVar(&tcfg.Lookahead, "lookahead", tcfg.Lookahead, "claim monitors due within this much of now; checkers start them on time (0: claim only what is due)")
	_ = fs.Parse(os.Args[1:])
	tcfg.Region = cfg.Region

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deps, err := service.Connect(ctx, cfg, "upwatch-ticker", true)
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
	// Ticker: claims and dispatches until cancelled; a tick in progress
	// finishes its publishes first.
	{
		t := ticker.New(tcfg, deps.Store, deps.JS, logger.With("component", "ticker"), deps.Registry)
		tctx, tcancel := context.WithCancel(ctx)
		g.Add(func() error { return t.Run(tctx) }, func(error) {
			logger.Info("stopping ticker")
			tcancel()
		})
	}
	// Admin: /healthz and /metrics.
	g.Add(admin.Serve, func(error) { admin.Shutdown() })

	err = g.Run()
	logger.Info("ticker stopped")
	var sig run.SignalError
	if errors.As(err, &sig) {
		return nil
	}
	return err
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(service.Env(key, "")); err == nil {
		return d
	}
	return def
}
