package tests

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/localpg"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// deployment is upwatch deployed as separate processes — a nats-server
// with file storage, PostgreSQL, and each service — under steady load
// from monitors of local HTTP targets. Fault tests break one piece and
// then count what was lost.
type deployment struct {
	t        *testing.T
	bin      string
	natsDir  string
	natsAddr string
	nats     *process
	pg       *localpg.Server // a private server, for tests that restart it
	pgDir    string
	dbURL    string
	st       *store.Store
	tg       *target
	monitors []store.Monitor
	interval time.Duration
	procs    map[string]*process
}

type deployOptions struct {
	monitors  int
	interval  time.Duration
	privatePG bool
	// respond handles target requests; a 200 when nil.
	respond http.HandlerFunc
}

func deploy(t *testing.T, o deployOptions) *deployment {
	t.Helper()
	d := &deployment{t: t, bin: binaries(t), natsDir: t.TempDir(), natsAddr: freeAddr(t),
		interval: o.interval, procs: map[string]*process{}}
	d.startNATS()
	if o.privatePG {
		dir, err := os.MkdirTemp("", "upwatch-fault-pg-")
		require.NoError(t, err)
		require.NoError(t, os.Chmod(dir, 0o755))
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		d.pgDir = dir
		d.pg, err = localpg.Start(context.Background(), localpg.Options{Dir: dir})
		require.NoError(t, err)
		t.Cleanup(d.pg.Stop)
		d.dbURL = d.pg.URL("upwatch")
	} else {
		d.dbURL = pgtest.NewDB(t)
	}
	out, err := exec.Command(filepath.Join(d.bin, "upwatch"), "migrate", "--database-url", d.dbURL).CombinedOutput()
	require.NoError(t, err, "upwatch migrate: %s", out)
	d.st, err = store.Open(context.Background(), d.dbURL, 4)
	require.NoError(t, err)
	t.Cleanup(d.st.Close)
	require.NoError(t, d.st.EnsurePartitions(context.Background(), time.Now().Add(-24*time.Hour), 2))

	d.tg = newTarget(t, o.respond)
	for i := range o.monitors {
		spec := monitor.Spec{Name: monitorPath(i), Kind: "http", Target: d.tg.url(monitorPath(i)),
			Interval: o.interval, Timeout: 3 * time.Second, Enabled: true}
		require.NoError(t, spec.Normalize())
		m, err := d.st.CreateMonitor(context.Background(), spec)
		require.NoError(t, err)
		d.monitors = append(d.monitors, m)
	}
	return d
}

func (d *deployment) natsURL() string { return "nats://" + d.natsAddr }

func (d *deployment) startNATS() {
	host, port, _ := net.SplitHostPort(d.natsAddr)
	d.nats = startProcess(d.t, filepath.Join(d.bin, "nats-server"), nil,
		"-js", "-sd", d.natsDir, "-a", host, "-p", port)
	eventually(d.t, 20*time.Second, "nats-server accepting connections", func() bool {
		c, err := net.DialTimeout("tcp", d.natsAddr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

// start runs a service; name is its binary, key tells apart two of one kind.
func (d *deployment) start(key, name string, env []string, args ...string) *process {
	d.t.Helper()
	addr := freeAddr(d.t)
	env = append([]string{"NATS_URL=" + d.natsURL(), "DATABASE_URL=" + d.dbURL, "HTTP_ADDR=" + addr,
		"LOG_FORMAT=json"}, env...)
	p := startProcess(d.t, filepath.Join(d.bin, name), env, args...)
	p.addr = addr
	d.procs[key] = p
	eventually(d.t, 30*time.Second, key+" healthy", func() bool {
		code, _ := httpGet("http://" + addr + "/healthz")
		return code == http.StatusOK
	})
	return p
}

// Lease floor for the fault tests: short, so a lost dispatch is retried
// within the test, and still longer than a check's redeliveries.
const faultLease = "12s"

func (d *deployment) startTicker(key string, env ...string) *process {
	return d.start(key, "upwatch-ticker", append([]string{"TICK=250ms"}, env...), "--min-lease", faultLease)
}

func (d *deployment) startChecker(key string, args ...string) *process {
	return d.start(key, "upwatch-checker", nil, append([]string{"--ack-wait", "4s"}, args...)...)
}

func (d *deployment) startResults(key string) *process {
	return d.start(key, "upwatch-results", nil, "--batch-wait", "100ms")
}

func (d *deployment) startAll() {
	d.startResults("results")
	d.startChecker("checker")
	d.startTicker("ticker")
}

// js is a client of the deployment's NATS, for looking at the streams.
func (d *deployment) js() jetstream.JetStream {
	nc, err := nats.Connect(d.natsURL(), nats.MaxReconnects(-1))
	require.NoError(d.t, err)
	d.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(d.t, err)
	return js
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 1 << 62 // not reachable yet: not drained
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 1 << 62
	}
	return info.State.Msgs
}

// steady lets the load run for a while.
func (d *deployment) steady(dur time.Duration) { time.Sleep(dur) }

// drain stops dispatching and waits until every dispatched check has been
// run and stored: CHECKS and RESULTS both empty.
func (d *deployment) drain() {
	d.t.Helper()
	d.procs["ticker"].terminate(d.t, 30*time.Second)
	if p, ok := d.procs["ticker2"]; ok && !p.exited() {
		p.terminate(d.t, 30*time.Second)
	}
	js := d.js()
	eventually(d.t, 90*time.Second, "CHECKS and RESULTS drained", func() bool {
		return streamMsgs(d.t, js, queue.ChecksStream) == 0 && streamMsgs(d.t, js, queue.ResultsStream) == 0
	})
}

// accounting is what became of every slot that fell due.
type accounting struct {
	slots     int // slots due before each monitor's current one
	checked   int // with a stored result
	skipped   int // recorded as skipped or failed, not checked
	lost      int // neither: the number that must be zero
	duplicate int // a slot stored twice, or a result off its monitor's cadence
}

// account walks every monitor's cadence from its first slot to the slot it
// is due for now, and finds each slot among the stored results or the
// skip records.
func (d *deployment) account() accounting {
	d.t.Helper()
	ctx := context.Background()
	var a accounting
	for _, m0 := range d.monitors {
		m, err := d.st.GetMonitor(ctx, m0.ID)
		require.NoError(d.t, err)
		results := map[int64]int{}
		rows, err := d.st.Pool().Query(ctx, `SELECT due_at FROM check_results WHERE monitor_id = $1 AND NOT manual`, m.ID)
		require.NoError(d.t, err)
		for rows.Next() {
			var due time.Time
			require.NoError(d.t, rows.Scan(&due))
			results[due.UnixMicro()]++
		}
		require.NoError(d.t, rows.Err())
		covered := map[int64]bool{}
		skipped, err := d.st.ListSkipped(ctx, m.ID, false, 1_000_000)
		require.NoError(d.t, err)
		for _, k := range skipped {
			for i := range k.Slots {
				covered[k.DueAt.Add(time.Duration(i)*m.Interval).UnixMicro()] = true
			}
		}
		onGrid := 0
		for due := m0.DueAt; due.Before(m.DueAt); due = due.Add(m.Interval) {
			a.slots++
			key := due.UnixMicro()
			switch n := results[key]; {
			case n > 0:
				a.checked++
				onGrid += n
				a.duplicate += n - 1
			case covered[key]:
				a.skipped++
			default:
				a.lost++
				if a.lost <= 5 {
					d.t.Logf("lost slot: monitor %d due %s", m.ID, due.Format(time.RFC3339Nano))
				}
			}
		}
		total := 0
		for _, n := range results {
			total += n
		}
		a.duplicate += total - onGrid // stored under a due time that is not one of its slots
	}
	d.t.Logf("slots %d: checked %d, skipped %d, lost %d, duplicate %d", a.slots, a.checked, a.skipped, a.lost, a.duplicate)
	return a
}

// requireNothingLost checks the accounting: no slot lost, none stored
// twice, and at least the given share of slots really checked (so a test
// cannot pass by skipping everything).
func (d *deployment) requireNothingLost(minChecked float64) accounting {
	d.t.Helper()
	a := d.account()
	require.Zero(d.t, a.lost, "lost slots")
	require.Zero(d.t, a.duplicate, "duplicate result rows")
	require.GreaterOrEqual(d.t, float64(a.checked), minChecked*float64(a.slots), "share of slots checked")
	return a
}

// metric reads one sample, name and labels as /metrics prints them, from
// a service.
func metric(t *testing.T, p *process, sample string) float64 {
	t.Helper()
	_, body := httpGet("http://" + p.addr + "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, sample+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, sample)), 64)
			require.NoError(t, err)
			return v
		}
	}
	return 0
}

func TestFaults(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault tests run the whole system for minutes")
	}
	const (
		monitors = 30
		interval = 2 * time.Second
	)
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(400 * time.Millisecond):
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
	}

	t.Run("CheckerKilledMidCheck", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, deployOptions{monitors: monitors, interval: interval, respond: slow})
		d.startResults("results")
		d.startChecker("checker")
		survivor := d.startChecker("checker2")
		d.startTicker("ticker")
		d.steady(10 * time.Second)
		// Checks take 400 ms, so the killed checker holds some in flight.
		d.procs["checker"].kill()
		d.steady(15 * time.Second) // past AckWait: its checks come back to the survivor
		d.drain()
		require.Positive(t, metric(t, survivor, "upwatch_checker_redeliveries_total"), "the killed checker's checks were redelivered")
		d.requireNothingLost(0.5)
	})

	t.Run("ResultsStoppedForAMinute", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, deployOptions{monitors: monitors, interval: interval})
		d.startAll()
		d.steady(8 * time.Second)
		d.procs["results"].terminate(t, 30*time.Second)
		js := d.js()
		d.steady(60 * time.Second)
		waiting := outcomesIn(t, js)
		t.Logf("outcomes waiting in RESULTS after 60 s: %d slots", len(waiting))
		require.NotEmpty(t, waiting)
		d.startResults("results")
		d.drain()
		// Every outcome that waited is stored.
		for slot := range waiting {
			require.Equal(t, 1, d.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1 AND due_at = $2`,
				slot.monitor, slot.due), "outcome of monitor %d due %s", slot.monitor, slot.due)
		}
		// Without the results service no outcome moves a monitor to its
		// next slot, so the ticker re-dispatches only as leases run out:
		// fewer slots are checked, and the rest are recorded as failed.
		d.requireNothingLost(0.15)
	})

	t.Run("NATSRestarted", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, deployOptions{monitors: monitors, interval: interval})
		d.startAll()
		d.steady(8 * time.Second)
		before := d.count(`SELECT count(*) FROM check_results`)
		d.nats.kill()
		time.Sleep(3 * time.Second)
		d.startNATS()
		// Every service reconnects by itself and checks resume.
		eventually(t, 60*time.Second, "checks stored after the restart", func() bool {
			return d.count(`SELECT count(*) FROM check_results`) > before+monitors*2
		})
		for key, p := range d.procs {
			require.False(t, p.exited(), "%s exited", key)
		}
		d.steady(5 * time.Second)
		d.drain()
		d.requireNothingLost(0.5)
	})

	t.Run("PostgresRestarted", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, deployOptions{monitors: monitors, interval: interval, privatePG: true})
		d.startAll()
		d.steady(8 * time.Second)
		d.pg.Kill()
		time.Sleep(5 * time.Second)
		var err error
		d.pg, err = localpg.Start(context.Background(), localpg.Options{Dir: d.pgDir})
		require.NoError(t, err)
		t.Cleanup(d.pg.Stop)
		before := d.count(`SELECT count(*) FROM check_results`)
		eventually(t, 60*time.Second, "checks stored after the restart", func() bool {
			return d.count(`SELECT count(*) FROM check_results`) > before+monitors*2
		})
		for key, p := range d.procs {
			require.False(t, p.exited(), "%s exited", key)
		}
		d.drain()
		d.requireNothingLost(0.5)
	})

	t.Run("TickerKilledAndRestarted", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, deployOptions{monitors: monitors, interval: interval})
		d.startAll()
		d.steady(8 * time.Second)
		d.procs["ticker"].kill()
		time.Sleep(5 * time.Second)
		d.startTicker("ticker")
		d.steady(20 * time.Second)
		d.drain()
		d.requireNothingLost(0.5)
		// No monitor went unchecked for longer than one interval plus the
		// lease (and a tick of slack).
		lease, _ := time.ParseDuration(faultLease)
		limit := interval + store.Lease(lease, 3000) + time.Second
		var worst float64
		require.NoError(t, d.st.Pool().QueryRow(context.Background(), `
			SELECT coalesce(max(gap), 0) FROM (
				SELECT extract(epoch FROM started_at - lag(started_at) OVER (PARTITION BY monitor_id ORDER BY due_at)) AS gap
				FROM check_results) g`).Scan(&worst))
		t.Logf("longest time between two checks of a monitor: %.1fs (limit %s)", worst, limit)
		require.Less(t, worst, limit.Seconds())
	})

	t.Run("StreamCapBelowFleetSize", func(t *testing.T) {
		t.Parallel()
		d := deploy(t, deployOptions{monitors: monitors, interval: interval})
		capped := []string{"CHECKS_MAX_MSGS=10"}
		d.start("results", "upwatch-results", capped)
		d.start("ticker", "upwatch-ticker", append(capped, "TICK=250ms"), "--min-lease", faultLease)
		js := d.js()
		eventually(t, 20*time.Second, "CHECKS at its cap", func() bool { return streamMsgs(t, js, queue.ChecksStream) == 10 })
		eventually(t, 20*time.Second, "the ticker saw the stream full", func() bool {
			return metric(t, d.procs["ticker"], `upwatch_ticker_dispatches_total{outcome="stream_full"}`) > 0
		})
		d.steady(3 * time.Second)
		require.LessOrEqual(t, streamMsgs(t, js, queue.ChecksStream), uint64(10))

		status, out := d.health()
		require.Equal(t, 2, status, "queue health exit status: %s", out)
		var rep struct {
			Status  string   `json:"status"`
			Reasons []string `json:"reasons"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
		require.Equal(t, "CRITICAL", rep.Status)
		require.Contains(t, strings.Join(rep.Reasons, "\n"), "cap of 10")
		for key, p := range d.procs {
			require.False(t, p.exited(), "%s exited", key)
		}

		// Raise the cap: a service started with the new setting updates the
		// stream, and the backlog clears.
		d.procs["ticker"].terminate(t, 30*time.Second)
		d.start("ticker", "upwatch-ticker", []string{"CHECKS_MAX_MSGS=10000", "TICK=250ms"}, "--min-lease", faultLease)
		d.start("checker", "upwatch-checker", []string{"CHECKS_MAX_MSGS=10000"}, "--ack-wait", "4s")
		eventually(t, 30*time.Second, "every monitor checked after the cap was raised", func() bool {
			return d.count(`SELECT count(DISTINCT monitor_id) FROM check_results`) == monitors
		})
		d.steady(5 * time.Second)
		d.drain()
		d.requireNothingLost(0.5)
	})

	t.Run("CheckerSIGTERMHandsBackInFlightChecks", func(t *testing.T) {
		t.Parallel()
		verySlow := func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(2500 * time.Millisecond):
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusOK)
		}
		d := deploy(t, deployOptions{monitors: monitors, interval: interval, respond: verySlow})
		d.startResults("results")
		d.startChecker("checker", "--shutdown-timeout", "1s")
		d.startChecker("checker2")
		d.startTicker("ticker")
		d.steady(8 * time.Second)
		// Stop it while it has checks running (they come in waves: every
		// monitor's check takes longer than its interval).
		eventually(t, 10*time.Second, "checks in flight", func() bool {
			return metric(t, d.procs["checker"], "upwatch_checker_in_flight") > 0
		})
		took := d.procs["checker"].terminate(t, 10*time.Second)
		t.Logf("checker stopped %s after SIGTERM", took.Round(time.Millisecond))
		require.Less(t, took, 5*time.Second, "within the shutdown deadline")
		// The checks it was running had 2.5 s to go and it had 1 s: it
		// handed them back to the stream for the other checker.
		require.Positive(t, metric(t, d.procs["checker2"], "upwatch_checker_redeliveries_total"), "handed-back checks ran again")
		d.steady(8 * time.Second)
		d.drain()
		require.Positive(t, metric(t, d.procs["checker2"], "upwatch_checker_checks_total{outcome=\"up\"}"))
		d.requireNothingLost(0.5)
	})
}

type slot struct {
	monitor int64
	due     time.Time
}

// outcomesIn reads the slots of every outcome waiting in RESULTS, by
// sequence, without consuming them.
func outcomesIn(t *testing.T, js jetstream.JetStream) map[slot]bool {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, queue.ResultsStream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	out := map[slot]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		var r queue.Result
		require.NoError(t, json.Unmarshal(msg.Data, &r))
		out[slot{r.MonitorID, r.DueAt}] = true
	}
	return out
}

func (d *deployment) count(sql string, args ...any) int {
	d.t.Helper()
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.st.Pool().QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return -1
	}
	return n
}

// health runs `upwatch queue health --json` and returns its exit status
// and output.
func (d *deployment) health() (int, string) {
	cmd := exec.Command(filepath.Join(d.bin, "upwatch"), "queue", "health", "--json", "--window", "1s")
	cmd.Env = append(os.Environ(), "NATS_URL="+d.natsURL(), "DATABASE_URL="+d.dbURL)
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), string(out)
	}
	require.NoError(d.t, err)
	return 0, string(out)
}
