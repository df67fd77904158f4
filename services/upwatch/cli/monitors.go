package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/store"
)

const monitorsSynopsis = "monitors add|list|rm [flags]"

func runMonitors(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return usageError{msg: "missing subcommand: " + monitorsSynopsis}
	}
	switch args[0] {
	case "add":
		return monitorsAdd(ctx, e, args[1:])
	case "list", "ls":
		return monitorsList(ctx, e, args[1:])
	case "rm", "remove", "delete":
		return monitorsRm(ctx, e, args[1:])
	default:
		return usageError{msg: fmt.Sprintf("unknown subcommand %q: %s", args[0], monitorsSynopsis)}
	}
}

// natsTimeout bounds the wait for NATS: the command works without it.
const natsTimeout = 2 * time.Second

// openManager opens the database and, when NATS answers, a connection for
// the manager's queue clean-up. The returned function closes both.
func openManager(ctx context.Context, e env, db dbFlags) (*store.Store, *manage.Manager, func(), error) {
	st, err := db.open(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var nc *nats.Conn
	if db.natsURL != "" {
		nc, err = nats.Connect(db.natsURL, nats.Name("upwatch-cli"), nats.Timeout(natsTimeout))
		if err != nil {
			fmt.Fprintf(e.stderr, "warning: NATS at %s not reachable (%v): a removed monitor's pending check "+
				"stays queued until a checker discards it\n", db.natsURL, err)
			nc = nil
		}
	}
	mgr, err := manage.New(st, nc, logger)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		st.Close()
		return nil, nil, nil, err
	}
	closeAll := func() {
		if nc != nil {
			// Flush so the "monitor removed" notice reaches checkers before we go.
			_ = nc.FlushTimeout(natsTimeout)
			nc.Close()
		}
		st.Close()
	}
	return st, mgr, closeAll, nil
}

func monitorsAdd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "monitors add",
		"monitors add --name N --kind http|tcp --target T --interval 30s [--retry-interval 10s] [--timeout 5s] [--method GET] [--expect 200,204] [--region R]")
	var (
		db          dbFlags
		spec        monitor.Spec
		method      string
		expect      string
		skipVerify  bool
		paused      bool
		intervalStr string
		retryStr    string
	)
	db.register(fs, true)
	fs.StringVar(&spec.Name, "name", "", "unique monitor name (required)")
	fs.StringVar(&spec.Kind, "kind", "", "http or tcp (required)")
	fs.StringVar(&spec.Target, "target", "", "URL for http, host:port for tcp (required)")
	fs.StringVar(&intervalStr, "interval", "30s", "time between checks, whole seconds")
	fs.StringVar(&retryStr, "retry-interval", "", "time between checks while the monitor is failing, whole seconds (default the interval)")
	fs.DurationVar(&spec.Timeout, "timeout", 0, "time limit of one check (default min(10s, interval))")
	fs.StringVar(&method, "method", "", "HTTP method (http only; default GET)")
	fs.StringVar(&expect, "expect", "", "comma-separated HTTP status codes meaning up (http only; default any 2xx)")
	fs.BoolVar(&skipVerify, "skip-tls-verify", false, "accept any TLS certificate (http only)")
	fs.StringVar(&spec.Region, "region", "", "region to check from (default \"default\")")
	fs.BoolVar(&paused, "paused", false, "create the monitor paused")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: "unexpected arguments: " + strings.Join(fs.Args(), " ")}
	}
	interval, err := time.ParseDuration(intervalStr)
	if err != nil {
		return usageError{msg: fmt.Sprintf("--interval %q is not a duration (write 30s, 5m)", intervalStr)}
	}
	spec.Interval = interval
	if retryStr != "" {
		retry, err := time.ParseDuration(retryStr)
		if err != nil {
			return usageError{msg: fmt.Sprintf("--retry-interval %q is not a duration (write 10s, 1m)", retryStr)}
		}
		spec.RetryInterval = retry
	}
	spec.Enabled = !paused
	codes, err := parseCodes(expect)
	if err != nil {
		return usageError{msg: err.Error()}
	}
	if strings.EqualFold(spec.Kind, monitor.KindHTTP) {
		spec.Settings.HTTP = &monitor.HTTPSettings{Method: method, ExpectedStatus: codes, SkipTLSVerify: skipVerify}
	} else if method != "" || len(codes) > 0 || skipVerify {
		return usageError{msg: "--method, --expect and --skip-tls-verify apply to --kind http only"}
	}
	_, mgr, closeAll, err := openManager(ctx, e, db)
	if err != nil {
		return err
	}
	defer closeAll()
	m, err := mgr.Create(ctx, spec)
	if err != nil {
		return fmt.Errorf("add monitor: %w", err)
	}
	fmt.Fprintln(e.stdout, m.ID)
	return nil
}

func parseCodes(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var codes []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("--expect: %q is not a status code", part)
		}
		codes = append(codes, n)
	}
	return codes, nil
}

// monitorJSON is the --json form of a monitor: stable field names for scripts.
type monitorJSON struct {
	ID              int64  `json:"id"`
	Name            string `json:"name"`
	Kind            string `json:"kind"`
	Target          string `json:"target"`
	Region          string `json:"region"`
	IntervalSeconds int64  `json:"interval_seconds"`
	// RetryIntervalSeconds is null when a failing monitor is re-checked on
	// its normal interval.
	RetryIntervalSeconds *int64                `json:"retry_interval_seconds"`
	TimeoutMS            int64                 `json:"timeout_ms"`
	Enabled              bool                  `json:"enabled"`
	HTTP                 *monitor.HTTPSettings `json:"http,omitempty"`
	State                string                `json:"state"`
	// Lane is the lane of the next dispatch: priority while failing.
	Lane             string     `json:"lane"`
	CheckRequestedAt *time.Time `json:"check_requested_at"`
	NextCheckAt      time.Time  `json:"next_check_at"`
	LastCheckedAt    *time.Time `json:"last_checked_at"`
	LastLatencyMS    *float64   `json:"last_latency_ms"`
	LastStatusCode   *int       `json:"last_status_code"`
	LastError        *string    `json:"last_error"`
}

func monitorsList(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "monitors list", "monitors list [--json]")
	var db dbFlags
	var asJSON bool
	db.register(fs, false)
	fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	st, err := db.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	mons, err := st.ListMonitors(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]monitorJSON, 0, len(mons))
		for _, m := range mons {
			j := monitorJSON{
				ID: m.ID, Name: m.Name, Kind: m.Kind, Target: m.Target, Region: m.Region,
				IntervalSeconds: int64(m.Interval / time.Second), TimeoutMS: m.Timeout.Milliseconds(),
				Enabled: m.Enabled, HTTP: m.Settings.HTTP, State: m.State, Lane: m.Lane,
				CheckRequestedAt: m.CheckRequestedAt, NextCheckAt: m.NextCheckAt,
				LastCheckedAt: m.LastCheckedAt, LastLatencyMS: m.LastLatencyMS,
				LastStatusCode: m.LastStatusCode, LastError: m.LastError,
			}
			if m.RetryInterval > 0 {
				retry := int64(m.RetryInterval / time.Second)
				j.RetryIntervalSeconds = &retry
			}
			out = append(out, j)
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tKIND\tTARGET\tINTERVAL\tSTATE\tLANE\tLAST CHECK\tLATENCY\tLAST ERROR")
	for _, m := range mons {
		state, lane := m.State, m.Lane
		if !m.Enabled {
			// A paused monitor is not dispatched on any lane.
			state, lane = "paused", "-"
		}
		interval := m.Interval.String()
		if m.RetryInterval > 0 {
			interval += " (" + m.RetryInterval.String() + " failing)"
		}
		last, latency, lastErr := "-", "-", ""
		if m.LastCheckedAt != nil {
			last = now.Sub(*m.LastCheckedAt).Truncate(time.Second).String() + " ago"
		}
		if m.LastLatencyMS != nil {
			latency = fmt.Sprintf("%.1fms", *m.LastLatencyMS)
		}
		if m.LastError != nil {
			lastErr = oneLine(*m.LastError, 60)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			m.ID, m.Name, m.Kind, m.Target, interval, state, lane, last, latency, lastErr)
	}
	return tw.Flush()
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		return string(r[:limit-1]) + "…"
	}
	return s
}

func monitorsRm(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "monitors rm", "monitors rm [flags] ID|NAME")
	var db dbFlags
	db.register(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "want exactly one monitor id or name"}
	}
	ref := fs.Arg(0)
	st, mgr, closeAll, err := openManager(ctx, e, db)
	if err != nil {
		return err
	}
	defer closeAll()
	m, err := findMonitor(ctx, st, ref)
	if err != nil {
		return err
	}
	if err := mgr.Delete(ctx, m.ID); err != nil {
		return fmt.Errorf("remove monitor %d: %w", m.ID, err)
	}
	fmt.Fprintf(e.stdout, "removed monitor %d (%s)\n", m.ID, m.Name)
	return nil
}

// findMonitor looks a monitor up by id, then by name (a monitor may be
// called "42").
func findMonitor(ctx context.Context, st *store.Store, ref string) (store.Monitor, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		m, err := st.GetMonitor(ctx, id)
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Monitor{}, err
		}
	}
	m, err := st.GetMonitorByName(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return store.Monitor{}, fmt.Errorf("no monitor has id or name %q", ref)
	}
	return m, err
}
