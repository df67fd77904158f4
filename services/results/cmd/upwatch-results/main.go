// Command upwatch-results stores check outcomes: it consumes RESULTS in
// batches and writes results, monitor state and next_check_at to
// PostgreSQL. Several may run; they share one consumer.
package main

import (
	"flag"
	"fmt"
	"os"

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

	return service.Main(cfg, "upwatch-results", true, func(deps *service.Deps) service.Worker {
		return results.New(rcfg, deps.Store, deps.JS, deps.Logger.With("component", "results"), deps.Registry)
	})
}
