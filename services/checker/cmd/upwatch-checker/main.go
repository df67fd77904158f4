// Command upwatch-checker runs the checks of one region: it consumes due
// checks from CHECKS, runs them and publishes the outcomes to RESULTS.
// Any number of checkers may serve a region; they share one consumer.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"

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
	// The checker's live heap is small (tens of MiB) but every check
	// allocates a connection's worth of buffers, so the default GC target
	// collects many times a second. A larger target trades a little memory
	// for CPU; GOGC in the environment still decides when it is set.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(400)
	}

	return service.Main(cfg, "upwatch-checker", false, func(deps *service.Deps) service.Worker {
		return checker.New(ccfg, deps.NC, deps.JS, deps.Logger.With("component", "checker"), deps.Registry)
	})
}
