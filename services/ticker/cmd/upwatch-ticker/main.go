// Command upwatch-ticker is the scheduler: it claims due monitors from
// PostgreSQL and publishes one check message per due slot to CHECKS.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

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

	return service.Main(cfg, "upwatch-ticker", true, func(deps *service.Deps) service.Worker {
		return ticker.New(tcfg, deps.Store, deps.JS, deps.Logger.With("component", "ticker"), deps.Registry)
	})
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(service.Env(key, "")); err == nil {
		return d
	}
	return def
}
