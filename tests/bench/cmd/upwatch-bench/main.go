// Command upwatch-bench benchmarks the whole of upwatch on this machine:
// nats-server, PostgreSQL, the ticker, checker and results service, each
// as its own process, checking a fleet of local HTTP targets. It prints a
// table and writes OUT/<workload>.json and OUT/<workload>.svg.
//
//	upwatch-bench --workload steady --monitors 10000 --interval 10s --duration 60s --warmup 20s
//
// Two hidden subcommands are the same binary run as helper processes, so
// their CPU is measured apart from the harness: "targets" serves the fleet,
// "baseline" fires the same checks with no queue and no database.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"upwatch.dev/tests/bench/baseline"
	"upwatch.dev/tests/bench/fleet"
	"upwatch.dev/tests/bench/harness"
	"upwatch.dev/tests/bench/report"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "upwatch-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "targets":
		err = targets(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "baseline":
		err = runBaseline(ctx, os.Args[2:])
	default:
		err = bench(ctx, os.Args[1:])
	}
	return err
}

func bench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upwatch-bench", flag.ContinueOnError)
	var cfg harness.Config
	var tickerArgs, checkerArgs, resultsArgs, natsArgs, out string
	fs.StringVar(&cfg.Workload, "workload", "steady", "steady, burst, recovery or failing")
	fs.IntVar(&cfg.Monitors, "monitors", 100_000, "HTTP monitors to create")
	fs.DurationVar(&cfg.Interval, "interval", 60*time.Second, "every monitor's check interval (whole seconds)")
	fs.DurationVar(&cfg.Duration, "duration", 120*time.Second, "length of the measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 60*time.Second, "time before the window")
	fs.DurationVar(&cfg.Outage, "outage", 5*time.Minute, "recovery: how long the checker is stopped, at the window's start")
	fs.DurationVar(&cfg.BaselineMax, "baseline-max", 30*time.Second, "longest bare baseline run")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "checker --concurrency (0: 400, failing: 1500)")
	fs.IntVar(&cfg.Addrs, "addrs", fleet.DefaultAddrs, "loopback addresses the targets listen on (127.0.1.1 …)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 3*time.Minute, "longest wait for the queues to empty after the window")
	fs.StringVar(&tickerArgs, "ticker-args", "", "extra upwatch-ticker arguments, space separated (e.g. \"--tick 250ms\")")
	fs.StringVar(&checkerArgs, "checker-args", "", "extra upwatch-checker arguments, space separated")
	fs.StringVar(&natsArgs, "nats-args", "", "extra nats-server arguments, space separated (e.g. \"--profile 6060\")")
	fs.StringVar(&resultsArgs, "results-args", "", "extra upwatch-results arguments, space separated")
	fs.StringVar(&out, "out", "bench-results", "directory for <workload>.json and <workload>.svg")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (binaries, data, logs)")
	quiet := fs.Bool("quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.TickerArgs = strings.Fields(tickerArgs)
	cfg.NATSArgs = strings.Fields(natsArgs)
	cfg.CheckerArgs = strings.Fields(checkerArgs)
	cfg.ResultsArgs = strings.Fields(resultsArgs)
	if !*quiet {
		cfg.Log = os.Stderr
	}
	res, err := harness.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := report.Table(os.Stdout, res); err != nil {
		return err
	}
	jsonPath, svgPath, err := report.Write(out, res)
	if err != nil {
		return err
	}
	fmt.Printf("\nwrote %s and %s\n", jsonPath, svgPath)
	return nil
}

// targets serves the fleet until interrupted. Its first line of output,
// "READY <port> <control address>", tells the harness where it is.
func targets(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("targets", flag.ContinueOnError)
	var cfg fleet.Config
	fs.StringVar(&cfg.Workload, "workload", "steady", "workload, for the share of failing targets")
	fs.IntVar(&cfg.Monitors, "monitors", 0, "monitor ids to count hits for")
	fs.IntVar(&cfg.Addrs, "addrs", fleet.DefaultAddrs, "loopback addresses to listen on")
	fs.IntVar(&cfg.Port, "port", 0, "port on every address (0: any free one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Listen(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("READY %d %s\n", f.Port(), f.ControlAddr())
	return f.Serve(ctx)
}

// runBaseline fires the checks and prints what it did as JSON.
func runBaseline(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	var cfg baseline.Config
	fs.IntVar(&cfg.Monitors, "monitors", 0, "monitors to cycle through")
	fs.DurationVar(&cfg.Interval, "interval", time.Minute, "each monitor's interval")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to fire checks")
	fs.IntVar(&cfg.Port, "port", 0, "the fleet's port")
	fs.IntVar(&cfg.Addrs, "addrs", fleet.DefaultAddrs, "the fleet's addresses")
	fs.IntVar(&cfg.Concurrency, "concurrency", 400, "most checks at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := baseline.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
