// Package harness runs the benchmark: it builds upwatch, starts every
// piece as its own process (nats-server, PostgreSQL, the target fleet, the
// ticker, checker and results service), loads monitors, measures a window
// of steady work, accounts for every slot that fell due in it, and runs a
// bare baseline of the same checks to price upwatch's overhead.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/localpg"
	"upwatch.dev/tests/bench/baseline"
	"upwatch.dev/tests/bench/fleet"
	"upwatch.dev/tests/bench/procstat"
	"upwatch.dev/tests/bench/report"
)

// Workloads the harness knows.
var Workloads = []string{"steady", "burst", "recovery", "failing"}

// Config describes one benchmark run.
type Config struct {
	Workload string
	Monitors int
	Interval time.Duration // whole seconds
	Duration time.Duration // the measured window (recovery: after the outage)
	Warmup   time.Duration
	// Outage is how long the checker is stopped in the recovery workload.
	Outage time.Duration
	// BaselineMax caps the bare baseline's length (it runs min(Duration, BaselineMax)).
	BaselineMax time.Duration
	// Concurrency is the checker's --concurrency; 0 picks 400, or 1500 for
	// the failing workload, where a fifth of the checks wait out their timeout.
	Concurrency int
	Addrs       int // loopback addresses of the fleet
	// Tail keeps the ticker running after the window so that slots due
	// just before its end are dispatched: a tick or two, plus margin.
	Tail time.Duration
	// DrainTimeout bounds the wait for CHECKS and RESULTS to empty.
	DrainTimeout time.Duration
	// Extra arguments for each service, for tuning without changing the harness.
	TickerArgs, CheckerArgs, ResultsArgs []string
	// NATSArgs are extra nats-server arguments (e.g. "--profile 6060").
	NATSArgs []string
	// Self is an executable with the hidden targets and baseline
	// subcommands: the harness's own binary.
	Self string
	// Root is the repository root (where go.work is); found from the
	// working directory when empty.
	Root string
	// Keep leaves the temporary directory (binaries, data, logs) in place.
	Keep bool
	// Log receives progress lines.
	Log io.Writer
}

func (c *Config) defaults() error {
	if c.Workload == "" {
		c.Workload = "steady"
	}
	known := false
	for _, w := range Workloads {
		known = known || w == c.Workload
	}
	if !known {
		return fmt.Errorf("unknown workload %q (want one of %s)", c.Workload, strings.Join(Workloads, ", "))
	}
	if c.Monitors <= 0 {
		return fmt.Errorf("monitors must be positive, not %d", c.Monitors)
	}
	if c.Interval < time.Second || c.Interval%time.Second != 0 {
		return fmt.Errorf("interval must be a whole number of seconds, not %s", c.Interval)
	}
	if c.Duration <= 0 {
		return errors.New("duration must be positive")
	}
	if c.Workload == "recovery" && c.Outage <= 0 {
		return errors.New("the recovery workload needs a positive outage")
	}
	if c.Workload != "recovery" {
		c.Outage = 0
	}
	if c.BaselineMax <= 0 {
		c.BaselineMax = 30 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 400
		if c.Workload == "failing" {
			c.Concurrency = 1500
		}
	}
	if c.Addrs <= 0 {
		c.Addrs = fleet.DefaultAddrs
	}
	if c.Tail <= 0 {
		c.Tail = 3 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 3 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Self == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		c.Self = exe
	}
	if c.Root == "" {
		root, err := findRoot()
		if err != nil {
			return err
		}
		c.Root = root
	}
	return nil
}

// findRoot walks up from the working directory to the directory holding go.work.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory: run from the upwatch repository")
		}
		dir = parent
	}
}

// role is one measured process kind, across restarts.
type role struct {
	cur     *proc
	retired uint64 // CPU ticks of earlier incarnations
	peakRSS uint64
	addr    string
}

type runner struct {
	cfg    Config
	tmp    string
	binDir string
	logDir string
	procs  []*proc

	natsURL string
	pg      *localpg.Server
	pgPID   int
	dbURL   string
	pool    *pgxpool.Pool
	nc      *nats.Conn
	js      jetstream.JetStream

	fleetPort    int
	fleetControl string

	mu      sync.Mutex
	roles   map[string]*role
	samples []sample
}

func (r *runner) logf(format string, a ...any) {
	_, _ = fmt.Fprintf(r.cfg.Log, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

// Run runs one benchmark and returns its result. Every process it started
// is stopped and its temporary directory removed when it returns, also
// when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (res *report.Result, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, roles: map[string]*role{}}
	defer func() {
		if err != nil && ctx.Err() == nil {
			r.dumpLogs()
		}
		r.cleanup()
	}()
	if err := r.setUp(ctx); err != nil {
		return nil, err
	}
	return r.measure(ctx)
}

func (r *runner) setUp(ctx context.Context) error {
	var err error
	r.tmp, err = os.MkdirTemp("", "upwatch-bench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	// PostgreSQL runs as the postgres user when we are root, and must be
	// able to enter the directory.
	if err := os.Chmod(r.tmp, 0o755); err != nil { //nolint:gosec // see above
		return fmt.Errorf("temporary directory: %w", err)
	}
	r.binDir = filepath.Join(r.tmp, "bin")
	r.logDir = filepath.Join(r.tmp, "logs")
	if err := os.MkdirAll(r.logDir, 0o755); err != nil { //nolint:gosec // logs meant to be read
		return fmt.Errorf("log directory: %w", err)
	}
	if err := r.build(ctx); err != nil {
		return err
	}
	if err := r.startNATS(ctx); err != nil {
		return err
	}
	if err := r.startPostgres(ctx); err != nil {
		return err
	}
	return r.startTargets(ctx)
}

func (r *runner) build(ctx context.Context) error {
	r.logf("building upwatch and nats-server into %s", r.binDir)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", r.binDir+"/", //nolint:gosec // fixed packages into our own directory
		"./services/upwatch/cmd/upwatch",
		"./services/ticker/cmd/upwatch-ticker",
		"./services/checker/cmd/upwatch-checker",
		"./services/results/cmd/upwatch-results",
		"github.com/nats-io/nats-server/v2")
	cmd.Dir = r.cfg.Root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

func (r *runner) startNATS(ctx context.Context) error {
	addr, err := freeAddr(ctx)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	p, err := r.start(report.NATS, filepath.Join(r.binDir, "nats-server"), nil,
		append([]string{"-js", "-sd", filepath.Join(r.tmp, "nats"), "-a", host, "-p", port}, r.cfg.NATSArgs...)...)
	if err != nil {
		return err
	}
	r.roles[report.NATS] = &role{cur: p}
	r.natsURL = "nats://" + addr
	if err := waitFor(ctx, 20*time.Second, "nats-server accepting connections", func() bool {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}); err != nil {
		return err
	}
	r.nc, err = nats.Connect(r.natsURL, nats.MaxReconnects(-1), nats.Name("upwatch-bench"))
	if err != nil {
		return fmt.Errorf("connect to nats-server: %w", err)
	}
	r.js, err = jetstream.New(r.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

func (r *runner) startPostgres(ctx context.Context) error {
	dir := filepath.Join(r.tmp, "pg")
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // the postgres user must enter it
		return fmt.Errorf("postgres directory: %w", err)
	}
	r.logf("starting PostgreSQL in %s", dir)
	var err error
	r.pg, err = localpg.Start(ctx, localpg.Options{Dir: dir, Durable: true})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	r.pgPID, err = procstat.PIDFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return fmt.Errorf("find the postmaster: %w", err)
	}
	r.roles[report.Postgres] = &role{}
	r.dbURL = r.pg.URL("upwatch")
	if out, err := exec.CommandContext(ctx, filepath.Join(r.binDir, "upwatch"), "migrate", //nolint:gosec // our binary
		"--database-url", r.dbURL).CombinedOutput(); err != nil {
		return fmt.Errorf("upwatch migrate: %w: %s", err, out)
	}
	r.pool, err = pgxpool.New(ctx, r.dbURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return nil
}

// startTargets runs the fleet as a child process of its own, so its CPU is
// measured apart from the harness, and reads the port it chose.
func (r *runner) startTargets(ctx context.Context) error {
	// Not CommandContext: cleanup stops the fleet in order, after the
	// services that check it.
	cmd := exec.Command(r.cfg.Self, "targets", //nolint:gosec,noctx // our own binary; see above
		"--workload", r.cfg.Workload, "--monitors", strconv.Itoa(r.cfg.Monitors), "--addrs", strconv.Itoa(r.cfg.Addrs))
	logf, err := os.Create(filepath.Join(r.logDir, "targets.log"))
	if err != nil {
		return fmt.Errorf("targets log: %w", err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("targets: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start targets: %w", err)
	}
	p := &proc{name: report.Targets, cmd: cmd, done: make(chan struct{}), log: logf.Name()}
	r.procs = append(r.procs, p)
	r.roles[report.Targets] = &role{cur: p}
	ready := make(chan string, 1)
	go func() {
		br := bufio.NewReader(out)
		line, _ := br.ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, br)
		p.err = cmd.Wait()
		close(p.done)
	}()
	select {
	case line := <-ready:
		// "READY <port> <control address>"
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "READY" {
			return fmt.Errorf("targets did not start: %q; %s", line, tail(p.log, 5))
		}
		r.fleetPort, _ = strconv.Atoi(f[1])
		r.fleetControl = f[2]
	case <-time.After(30 * time.Second):
		return errors.New("targets did not start within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
	r.logf("target fleet on 127.0.1.1-%d port %d", r.cfg.Addrs, r.fleetPort)
	return nil
}

// startService runs one upwatch service and waits for its /healthz.
func (r *runner) startService(ctx context.Context, name string, extra []string, args ...string) error {
	ro := r.roles[name]
	if ro == nil {
		ro = &role{}
		addr, err := freeAddr(ctx)
		if err != nil {
			return err
		}
		ro.addr = addr
	}
	env := []string{
		"NATS_URL=" + r.natsURL, "DATABASE_URL=" + r.dbURL, "HTTP_ADDR=" + ro.addr,
		"LOG_FORMAT=json", "LOG_LEVEL=warn",
		// The stream's safety cap must not be what bounds the queue here:
		// one pending check per monitor and lane is the bound under test.
		"CHECKS_MAX_MSGS=" + strconv.Itoa(max(10_000, 2*r.cfg.Monitors)),
	}
	p, err := r.start(name, filepath.Join(r.binDir, name), env, append(args, extra...)...)
	if err != nil {
		return err
	}
	r.mu.Lock()
	ro.cur = p
	r.roles[name] = ro
	r.mu.Unlock()
	return waitFor(ctx, 60*time.Second, name+" healthy", func() bool {
		return !p.exited() && healthy(ctx, ro.addr)
	})
}

func (r *runner) startChecker(ctx context.Context) error {
	return r.startService(ctx, report.Checker, r.cfg.CheckerArgs, "--concurrency", strconv.Itoa(r.cfg.Concurrency))
}

// stopRole stops a service and keeps its CPU for the role's total.
func (r *runner) stopRole(name string, within time.Duration) error {
	r.mu.Lock()
	ro := r.roles[name]
	r.mu.Unlock()
	if ro == nil || ro.cur == nil {
		return nil
	}
	err := ro.cur.stop(within)
	ticks, _ := ro.cur.cpuTicks()
	r.mu.Lock()
	ro.retired += ticks
	ro.cur = nil
	r.mu.Unlock()
	return err
}

// createMonitors inserts monitors 1..N with COPY, which writes the
// identity column as given, so each target URL can carry its monitor's id.
// Monitor i's first slot is first(i).
func (r *runner) createMonitors(ctx context.Context, first func(id int64) time.Time) error {
	n := r.cfg.Monitors
	iv := int32(r.cfg.Interval / time.Second) //nolint:gosec // validated: whole seconds
	timeoutMS := int32(fleet.MonitorTimeout / time.Millisecond)
	rows := make([][]any, 0, n)
	for id := int64(1); id <= int64(n); id++ {
		due := first(id)
		rows = append(rows, []any{id, "bench-" + strconv.FormatInt(id, 10), "http",
			fleet.URL(id, r.fleetPort, r.cfg.Addrs), "default", iv, timeoutMS, true, due, due})
	}
	start := time.Now()
	copied, err := r.pool.CopyFrom(ctx, pgx.Identifier{"monitors"},
		[]string{"id", "name", "kind", "target", "region", "interval_seconds", "timeout_ms", "enabled", "due_at", "next_check_at"},
		pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copy monitors: %w", err)
	}
	if _, err := r.pool.Exec(ctx, `SELECT setval(pg_get_serial_sequence('monitors', 'id'), $1)`, n); err != nil {
		return fmt.Errorf("move the monitor id sequence: %w", err)
	}
	if _, err := r.pool.Exec(ctx, `ANALYZE monitors`); err != nil {
		return fmt.Errorf("analyze monitors: %w", err)
	}
	r.logf("created %d monitors in %s", copied, time.Since(start).Round(time.Millisecond))
	return nil
}

// streamMsgs is the number of messages in a stream, or -1 when NATS does
// not answer.
func (r *runner) streamMsgs(ctx context.Context, name string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	s, err := r.js.Stream(ctx, name)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return int64(info.State.Msgs) //nolint:gosec // message counts fit
}

// dbSize is the database's size in bytes.
func (r *runner) dbSize(ctx context.Context) (int64, error) {
	var n int64
	err := r.pool.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("database size: %w", err)
	}
	return n, nil
}

// runBaseline runs the bare baseline as a child process and returns what
// it did and the CPU it used.
func (r *runner) runBaseline(ctx context.Context, d time.Duration) (baseline.Result, time.Duration, uint64, error) {
	cmd := exec.CommandContext(ctx, r.cfg.Self, "baseline", //nolint:gosec // our own binary
		"--monitors", strconv.Itoa(r.cfg.Monitors), "--interval", r.cfg.Interval.String(),
		"--duration", d.String(), "--port", strconv.Itoa(r.fleetPort), "--addrs", strconv.Itoa(r.cfg.Addrs),
		"--concurrency", strconv.Itoa(r.cfg.Concurrency))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Run(); err != nil {
		return baseline.Result{}, 0, 0, fmt.Errorf("baseline: %w: %s", err, errb.String())
	}
	var res baseline.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return baseline.Result{}, 0, 0, fmt.Errorf("baseline output %q: %w", out.String(), err)
	}
	st := cmd.ProcessState
	var maxRSS uint64
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		maxRSS = uint64(ru.Maxrss) * 1024 //nolint:gosec // kilobytes, positive
	}
	return res, st.UserTime() + st.SystemTime(), maxRSS, nil
}

func (r *runner) cleanup() {
	if r.nc != nil {
		r.nc.Close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
	// Services first, so nothing writes to a stopped NATS or database.
	for i := len(r.procs) - 1; i >= 0; i-- {
		_ = r.procs[i].stop(15 * time.Second)
	}
	if r.pg != nil {
		r.pg.Stop()
	}
	if r.tmp == "" {
		return
	}
	if r.cfg.Keep {
		r.logf("kept %s (binaries, data, logs)", r.tmp)
		return
	}
	_ = os.RemoveAll(r.tmp)
}

// dumpLogs shows the end of every process's log, to explain a failure.
func (r *runner) dumpLogs() {
	for _, p := range r.procs {
		if t := tail(p.log, 15); t != "" {
			_, _ = fmt.Fprintf(r.cfg.Log, "--- %s (%s), last lines:\n%s\n", p.name, p.log, t)
		}
	}
}
