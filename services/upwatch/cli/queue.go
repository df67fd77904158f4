package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/health"
	"upwatch.dev/shared/queueadmin"
	"upwatch.dev/shared/store"
)

const queueSynopsis = "queue health|inspect|flush [flags]"

func runQueue(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return usageError{msg: "missing subcommand: " + queueSynopsis}
	}
	switch args[0] {
	case "health":
		return queueHealth(ctx, e, args[1:])
	case "inspect":
		return queueInspect(ctx, e, args[1:])
	case "flush":
		return queueFlush(ctx, e, args[1:])
	default:
		return usageError{msg: fmt.Sprintf("unknown subcommand %q: %s", args[0], queueSynopsis)}
	}
}

// openQueue connects to NATS (required here) and to the database.
func openQueue(ctx context.Context, db dbFlags, needDB bool) (jetstream.JetStream, *store.Store, func(), error) {
	if needDB {
		if err := db.requireDB(); err != nil {
			return nil, nil, nil, err
		}
	}
	nc, err := nats.Connect(db.natsURL, nats.Name("upwatch-cli"), nats.Timeout(natsTimeout))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to NATS at %s (set NATS_URL or --nats-url): %w", db.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	var st *store.Store
	if needDB {
		st, err = db.open(ctx)
		if err != nil {
			nc.Close()
			return nil, nil, nil, err
		}
	}
	return js, st, func() {
		nc.Close()
		if st != nil {
			st.Close()
		}
	}, nil
}

// exitStatusError carries a command's own exit status (the health command's
// 0/1/2/3), after it has printed everything it has to say.
type exitStatusError int

func (e exitStatusError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func queueHealth(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "queue health", "queue health [--json] [flags]")
	var db dbFlags
	db.register(fs, true)
	asJSON := fs.Bool("json", false, "print one JSON object")
	window := fs.Duration("window", 5*time.Second, "how long to watch the queue to measure its growth (at least 2s)")
	th := health.DefaultThresholds()
	th.RegisterFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	rep, err := collectHealth(ctx, db, *window)
	if err != nil {
		rep = health.Report{Status: health.Unknown, Reasons: []string{"UNKNOWN: " + err.Error()}}
	} else {
		rep.Evaluate(th)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printHealth(e, rep)
	}
	if code := health.ExitCode(rep.Status); code != 0 {
		return exitStatusError(code)
	}
	return nil
}

func collectHealth(ctx context.Context, db dbFlags, window time.Duration) (health.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, window+15*time.Second)
	defer cancel()
	js, st, closeAll, err := openQueue(ctx, db, true)
	if err != nil {
		return health.Report{}, err
	}
	defer closeAll()
	return health.Collect(ctx, js, st, window)
}

func printHealth(e env, r health.Report) {
	fmt.Fprintf(e.stdout, "%s\n", r.Status)
	for _, reason := range r.Reasons {
		fmt.Fprintf(e.stdout, "  %s\n", reason)
	}
	if r.Status == health.Unknown {
		return
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "CHECKS depth\t%d of %d\n", r.Depth, r.StreamCap)
	fmt.Fprintf(tw, "pending\t%d\n", r.Pending)
	fmt.Fprintf(tw, "in flight\t%d\n", r.InFlight)
	fmt.Fprintf(tw, "redelivered\t%d\n", r.Redelivered)
	fmt.Fprintf(tw, "oldest pending\t%.1fs\n", r.OldestPendingSeconds)
	fmt.Fprintf(tw, "processed per minute\t%.0f (due per minute %.0f)\n", r.ProcessedPerMinute, r.ExpectedPerMinute)
	fmt.Fprintf(tw, "failed last hour\t%d\n", r.FailedLastHour)
	fmt.Fprintf(tw, "growth per minute\t%+.0f (over %.0fs)\n", r.GrowthPerMinute, r.WindowSeconds)
	fmt.Fprintf(tw, "lag p50 / p99\t%.3fs / %.3fs\n", r.LagP50Seconds, r.LagP99Seconds)
	fmt.Fprintf(tw, "active monitors\t%d\n", r.ActiveMonitors)
	_ = tw.Flush()
	if len(r.Consumers) > 0 {
		fmt.Fprintln(e.stdout)
		tw = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CONSUMER\tLANE\tPENDING\tIN FLIGHT\tREDELIVERED\tWAITING PULLS")
		for _, c := range r.Consumers {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", c.Name, c.Lane, c.Pending, c.InFlight, c.Redelivered, c.Waiting)
		}
		_ = tw.Flush()
	}
}

func queueInspect(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "queue inspect", "queue inspect [--limit N] [--json]")
	var db dbFlags
	db.register(fs, true)
	limit := fs.Int("limit", 100, "most messages to show (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	js, _, closeAll, err := openQueue(ctx, db, false)
	if err != nil {
		return err
	}
	defer closeAll()
	entries, total, err := queueadmin.Inspect(ctx, js, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"total": total, "messages": entries})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tMONITOR\tREGION\tLANE\tDUE\tATTEMPT\tAGE\tSTATE")
	for _, m := range entries {
		lane := m.Lane
		if m.Manual {
			lane += " (manual)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%d\t%.1fs\t%s\n", m.Seq, m.MonitorID, m.Region, lane,
			m.DueAt.Local().Format(time.TimeOnly), m.Attempt, m.AgeSeconds, m.State)
	}
	_ = tw.Flush()
	fmt.Fprintf(e.stdout, "%d message(s) in CHECKS", total)
	if total > len(entries) {
		fmt.Fprintf(e.stdout, ", %d shown", len(entries))
	}
	fmt.Fprintln(e.stdout)
	return nil
}

func queueFlush(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "queue flush", "queue flush --yes")
	var db dbFlags
	db.register(fs, true)
	yes := fs.Bool("yes", false, "really empty CHECKS")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !*yes {
		return usageError{msg: "this empties CHECKS; the next tick dispatches whatever is due again. Pass --yes to go ahead"}
	}
	js, st, closeAll, err := openQueue(ctx, db, true)
	if err != nil {
		return err
	}
	defer closeAll()
	purged, reset, err := queueadmin.Flush(ctx, js, st)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "flushed %d message(s) from CHECKS; %d monitor(s) due again at the next tick\n", purged, reset)
	return nil
}

const checkSynopsis = "check --monitor-id N [--timeout 30s] [--json]"

// runCheck runs a monitor's check now, on the priority lane, and waits for
// its outcome as if it had been run by hand. Exit status: 0 up, 1 down,
// 3 no outcome in time.
func runCheck(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "check", checkSynopsis)
	var db dbFlags
	db.register(fs, false)
	id := fs.Int64("monitor-id", 0, "the monitor to check")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the outcome")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *id <= 0 {
		return usageError{msg: "--monitor-id is required: " + checkSynopsis}
	}
	st, err := db.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	mon, err := st.GetMonitor(ctx, *id)
	if err != nil {
		return err
	}
	at, err := st.RequestCheck(ctx, *id)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	for {
		res, err := st.FirstResultSince(ctx, *id, at)
		if err != nil {
			return err
		}
		if res != nil {
			return printCheck(e, mon, res, *asJSON)
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(e.stderr, "upwatch check: no outcome for monitor %d within %s (is a ticker and a checker of region %q running?)\n",
				*id, *timeout, mon.Region)
			return exitStatusError(3)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printCheck(e env, mon store.Monitor, r *store.CheckResult, asJSON bool) error {
	status := "down"
	if r.Up {
		status = "up"
	}
	if asJSON {
		out := map[string]any{"monitor_id": r.MonitorID, "name": mon.Name, "status": status, "latency_ms": r.LatencyMS,
			"error": r.Error, "status_code": r.StatusCode, "started_at": r.StartedAt, "checked_at": r.CheckedAt}
		enc := json.NewEncoder(e.stdout)
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		line := fmt.Sprintf("%s %s %s in %.1f ms", mon.Name, strings.ToUpper(status), mon.Target, r.LatencyMS)
		if r.StatusCode != nil {
			line += fmt.Sprintf(" (HTTP %d)", *r.StatusCode)
		}
		if r.Error != "" {
			line += ": " + r.Error
		}
		fmt.Fprintln(e.stdout, line)
	}
	if !r.Up {
		return exitStatusError(1)
	}
	return nil
}
