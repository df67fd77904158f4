// Command upwatch-checker runs the checks of one region: it consumes due
// checks from CHECKS, runs them and publishes the outcomes to RESULTS.
// Any number of checkers may serve a region; they share one consumer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"

	"github.com/oklog/run"

	"upwatch.dev/services/checker/checker"
	"upwatch.dev/shared/service"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "upwatch-checker:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var cfg service.Config
	ccfg := checker.DefaultConfig()
	fs := flag.NewFlagSet("upwatch-checker", flag.ExitOnError)
	cfg.RegisterFlags(fs, "127.0.0.1:9102")
	fs.IntVar(&ccfg.Concurrency, "concurrency", ccfg.Concurrency, "most checks run at once")
	fs.DurationVar(&ccfg.AckWait, "ack-wait", ccfg.AckWait, "time a fetched check may go without an ack or progress signal")
	fs.IntVar(&ccfg.MaxAckPending, "max-ack-pending", ccfg.MaxAckPending, "most checks fetched but not acked, across the region's checkers")
	fs.IntVar(&ccfg.MaxDeliver, "max-deliver", ccfg.MaxDeliver, "deliveries of a check before its slot is recorded as failed")
	fs.DurationVar(&ccfg.ShutdownTimeout, "shutdown-timeout", ccfg.ShutdownTimeout, "time checks in progress may finish after SIGTERM before they are handed back")
	_ = fs.Parse(os.Args[1:])
	ccfg.Region = cfg.Region

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deps, err := service.Connect(ctx, cfg, "upwatch-checker", false)
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
	// Checker: on stop, fetches no more, finishes or hands back what it holds.
	{
		c := checker.New(ccfg, deps.NC, deps.JS, logger.With("component", "checker"), deps.Registry)
		cctx, ccancel := context.WithCancel(ctx)
		g.Add(func() error { return c.Run(cctx) }, func(error) {
			logger.Info("stopping checker")
			ccancel()
		})
	}
	// Admin: /healthz and /metrics.
	g.Add(admin.Serve, func(error) { admin.Shutdown() })

	err = g.Run()
	logger.Info("checker stopped")
	var sig run.SignalError
	if errors.As(err, &sig) {
		return nil
	}
	return err
}
