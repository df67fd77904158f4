// Package checker consumes due checks, runs them, publishes each outcome to
// RESULTS and only then acks. It never publishes a check message: only the
// ticker creates work.
package checker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"upwatch.dev/services/checker/probe"
	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/queue"
)

// Config tunes a checker.
type Config struct {
	// Region whose checks this checker runs.
	Region string
	// Concurrency is the most checks run at once.
	Concurrency int
	// AckWait is how long a fetched check may go without an ack or a
	// progress signal before JetStream hands it to another checker.
	AckWait time.Duration
	// MaxAckPending caps checks fetched but not yet acked, across every
	// checker of the region.
	MaxAckPending int
	// MaxDeliver is how many times a check is delivered before it is
	// given up on and its slot recorded as failed.
	MaxDeliver int
	// ShutdownTimeout is how long checks in progress may run on after a
	// stop is asked for; the ones still running then are handed back.
	ShutdownTimeout time.Duration
}

// DefaultAckWait is the default check timeout (10 s) plus 5 s to publish
// the outcome. Checks with longer timeouts send progress signals every
// AckWait/3 while they run, so AckWait only bounds how soon a check held by
// a vanished checker comes back.
const DefaultAckWait = 15 * time.Second

// DefaultConfig runs 200 checks at a time.
func DefaultConfig() Config {
	return Config{Region: "default", Concurrency: 200, AckWait: DefaultAckWait, MaxAckPending: 20_000,
		MaxDeliver: 3, ShutdownTimeout: 20 * time.Second}
}

// Checker runs due checks.
type Checker struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	logger  *slog.Logger
	prober  *probe.Prober
	removed *removedSet
	metrics metrics
	// outcomes carries finished checks to the reporter (see report.go).
	outcomes chan outcome
}

type metrics struct {
	checks      *prometheus.CounterVec
	duration    prometheus.Histogram
	lag         prometheus.Histogram
	terminated  *prometheus.CounterVec
	redelivered prometheus.Counter
	handedBack  prometheus.Counter
	inFlight    prometheus.Gauge
}

// New builds a checker.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, logger *slog.Logger, reg prometheus.Registerer) *Checker {
	m := metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "upwatch_checker_checks_total", Help: "Checks run, by outcome (up, down).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "upwatch_checker_check_duration_seconds", Help: "Time one check took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "upwatch_checker_schedule_lag_seconds", Help: "Scheduling lag: when a check started minus when it was due.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120},
		}),
		terminated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "upwatch_checker_terminated_total", Help: "Check messages removed without running, by reason.",
		}, []string{"reason"}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "upwatch_checker_redeliveries_total", Help: "Check messages delivered more than once.",
		}),
		handedBack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "upwatch_checker_handed_back_total", Help: "Check messages handed back (nak) unfinished, at shutdown or on a publish failure.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "upwatch_checker_in_flight", Help: "Checks running now.",
		}),
	}
	reg.MustRegister(m.checks, m.duration, m.lag, m.terminated, m.redelivered, m.handedBack, m.inFlight)
	return &Checker{cfg: cfg, nc: nc, js: js, logger: logger, prober: probe.New(), removed: newRemovedSet(), metrics: m}
}

// Run consumes checks until ctx is cancelled, then stops fetching, lets the
// checks in progress finish within ShutdownTimeout and hands back the rest.
// Whenever a check can start, a waiting priority check goes first.
func (c *Checker) Run(ctx context.Context) error {
	sub, err := c.nc.Subscribe(manage.RemovedSubject, func(m *nats.Msg) {
		if id, err := strconv.ParseInt(string(m.Data), 10, 64); err == nil {
			c.removed.add(id)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", manage.RemovedSubject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	priority := make(chan jetstream.Msg)
	scheduled := make(chan jetstream.Msg)
	var readers sync.WaitGroup
	readers.Go(func() { c.readLane(ctx, queue.LanePriority, max(c.cfg.Concurrency/4, 8), priority) })
	readers.Go(func() { c.readLane(ctx, queue.LaneScheduled, c.cfg.Concurrency, scheduled) })

	// Checks run on their own context: a stop lets them finish, and only
	// the shutdown deadline cancels them.
	checkCtx, cancelChecks := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelChecks()

	// A fixed pool of workers runs the checks: long-lived goroutines keep
	// the stacks they grew, where a goroutine per check would grow a new
	// one every time. sem counts the workers free to take a check.
	type job struct {
		msg jetstream.Msg
		chk queue.Check
		err error
	}
	jobs := make(chan job)
	sem := make(chan struct{}, c.cfg.Concurrency)
	c.outcomes = make(chan outcome, c.cfg.Concurrency)
	reported := make(chan struct{})
	go func() { c.report(c.outcomes); close(reported) }()
	var workers sync.WaitGroup
	for range c.cfg.Concurrency {
		workers.Go(func() {
			for j := range jobs {
				c.handle(checkCtx, j.msg, j.chk, j.err)
				<-sem
			}
		})
	}

	var parked sync.WaitGroup
	c.logger.Info("checker started", "region", c.cfg.Region, "concurrency", c.cfg.Concurrency)
	for ctx.Err() == nil {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		var msg jetstream.Msg
		select {
		case msg = <-priority:
		default:
			select {
			case msg = <-priority:
			case msg = <-scheduled:
			case <-ctx.Done():
				<-sem
				continue
			}
		}
		chk, err := decode(msg)
		if wait := time.Until(chk.DueAt); err == nil && wait > 0 && wait < maxEarly {
			// Dispatched ahead of its slot: start it on time, and take a
			// worker only then.
			<-sem
			parked.Go(func() {
				timer := time.NewTimer(wait)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-ctx.Done():
					c.handBack(msg)
					return
				}
				select {
				case sem <- struct{}{}:
					jobs <- job{msg: msg, chk: chk}
				case <-ctx.Done():
					c.handBack(msg)
				}
			})
			continue
		}
		jobs <- job{msg: msg, chk: chk, err: err}
	}
	readers.Wait()
	parked.Wait()
	close(jobs)

	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.cfg.ShutdownTimeout):
		c.logger.Warn("shutdown deadline reached; handing back checks in progress")
		cancelChecks()
		<-done
	}
	// Every worker is done: report what they finished, then return.
	close(c.outcomes)
	<-reported
	return nil
}

// readLane feeds a lane's checks to out until ctx ends, re-subscribing
// after failures (NATS restarts, a deleted consumer).
func (c *Checker) readLane(ctx context.Context, lane string, buffer int, out chan<- jetstream.Msg) {
	for ctx.Err() == nil {
		err := c.consume(ctx, lane, buffer, out)
		if err != nil && ctx.Err() == nil {
			c.logger.Warn("consuming checks failed; retrying", "lane", lane, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// consume runs one consumer subscription until ctx ends or it fails. On a
// stop it drains: checks already fetched are handed back at once rather
// than left to time out.
func (c *Checker) consume(ctx context.Context, lane string, buffer int, out chan<- jetstream.Msg) error {
	name := queue.CheckerConsumer(c.cfg.Region, lane)
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := c.js.CreateOrUpdateConsumer(setupCtx, queue.ChecksStream,
		queue.CheckerConsumerConfig(c.cfg.Region, lane, c.cfg.AckWait, c.cfg.MaxDeliver, c.cfg.MaxAckPending))
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", name, err)
	}
	// Fetch about as many as can run: buffered messages age against AckWait.
	it, err := cons.Messages(jetstream.PullMaxMessages(buffer))
	if err != nil {
		return fmt.Errorf("consume %s: %w", name, err)
	}
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return nil
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			return err
		case err != nil:
			c.logger.Debug("fetching checks", "lane", lane, "err", err)
			continue
		}
		select {
		case out <- msg:
		case <-ctx.Done():
			c.handBack(msg)
		}
	}
}

// handBack returns a message to the stream at once for another checker.
func (c *Checker) handBack(msg jetstream.Msg) {
	c.metrics.handedBack.Inc()
	_ = msg.Nak()
}

func (c *Checker) terminate(msg jetstream.Msg, reason string) {
	c.metrics.terminated.WithLabelValues(reason).Inc()
	if err := msg.Term(); err != nil {
		c.logger.Warn("terminate check message", "reason", reason, "err", err)
	}
}

// maxEarly bounds how long a check dispatched ahead of its slot waits for
// it. The ticker claims at most a tick ahead; a longer wait means the
// clocks disagree, and then the check runs at once rather than wait out
// its AckWait.
const maxEarly = 5 * time.Second

// decode reads a check message.
func decode(msg jetstream.Msg) (queue.Check, error) {
	var chk queue.Check
	err := json.Unmarshal(msg.Data(), &chk)
	if err == nil {
		err = chk.Validate()
	}
	return chk, err
}

// handle runs one decoded check (err: why it could not be decoded) and
// reports its outcome.
func (c *Checker) handle(ctx context.Context, msg jetstream.Msg, chk queue.Check, err error) {
	if err != nil {
		c.logger.Error("malformed check message; terminating it", "subject", msg.Subject(), "err", err)
		c.reportFailure(ctx, msg, chk, "malformed check message: "+err.Error())
		c.terminate(msg, "malformed")
		return
	}
	if c.removed.dispatchedBefore(chk.MonitorID, chk.DispatchedAt) {
		// Deleted or paused after this check was dispatched; the slot was
		// recorded as skipped when it was removed.
		c.terminate(msg, "monitor_removed")
		return
	}
	delivered := uint64(1)
	if meta, err := msg.Metadata(); err == nil {
		delivered = meta.NumDelivered
	}
	if delivered > 1 {
		c.metrics.redelivered.Inc()
	}

	c.metrics.inFlight.Inc()
	defer c.metrics.inFlight.Dec()
	stopProgress := c.keepAlive(msg, chk.Timeout())
	started := time.Now()
	c.metrics.lag.Observe(max(0, started.Sub(chk.DueAt).Seconds()))
	out := c.prober.Run(ctx, chk.Kind, chk.Target, chk.Settings, chk.Timeout())
	finished := time.Now()
	stopProgress()
	if ctx.Err() != nil {
		// Cut short by the shutdown deadline: the outcome says nothing
		// about the target, so another checker runs it again.
		c.handBack(msg)
		return
	}
	c.metrics.duration.Observe(out.Latency.Seconds())
	if out.Up {
		c.metrics.checks.WithLabelValues("up").Inc()
	} else {
		c.metrics.checks.WithLabelValues("down").Inc()
	}

	res := queue.Result{
		MonitorID: chk.MonitorID, Region: chk.Region, DueAt: chk.DueAt, Attempt: chk.Attempt,
		StartedAt: started, FinishedAt: finished, Up: out.Up,
		LatencyMS: float64(out.Latency.Microseconds()) / 1000, StatusCode: out.StatusCode, Error: out.Error,
		Manual: chk.Manual,
	}
	data, err := json.Marshal(&res)
	if err != nil {
		c.logger.Error("encode result", "monitor", chk.MonitorID, "err", err)
		c.handBack(msg)
		return
	}
	c.outcomes <- outcome{msg: msg, monitorID: chk.MonitorID, data: data, delivered: delivered}
}

// reportFailure sends a check that cannot run to the results service, which
// records it; if even that fails, the message's advisory does the same job.
func (c *Checker) reportFailure(ctx context.Context, msg jetstream.Msg, chk queue.Check, reason string) {
	f := queue.Failure{Stream: queue.ChecksStream, Subject: msg.Subject(), Reason: reason, Data: msg.Data(),
		MonitorID: chk.MonitorID, Region: chk.Region, DueAt: chk.DueAt}
	if meta, err := msg.Metadata(); err == nil {
		f.Seq = meta.Sequence.Stream
	}
	data, err := json.Marshal(&f)
	if err != nil {
		return
	}
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := c.js.Publish(pubCtx, queue.FailureSubject, data); err != nil {
		c.logger.Warn("report failed check", "subject", msg.Subject(), "err", err)
	}
}

// keepAlive tells JetStream a long check is still running, so it is not
// redelivered to another checker while this one works on it.
func (c *Checker) keepAlive(msg jetstream.Msg, timeout time.Duration) (stop func()) {
	every := c.cfg.AckWait / 3
	if timeout < every {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// removedSet remembers recently deleted or paused monitors for long enough
// to cover any check of theirs that was already fetched.
type removedSet struct {
	mu  sync.Mutex
	ids map[int64]time.Time
}

const removedTTL = 10 * time.Minute

func newRemovedSet() *removedSet { return &removedSet{ids: map[int64]time.Time{}} }

func (r *removedSet) add(id int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for k, at := range r.ids {
		if now.Sub(at) > removedTTL {
			delete(r.ids, k)
		}
	}
	r.ids[id] = now
}

// dispatchedBefore reports whether the monitor was removed after a check
// dispatched at dispatched: a monitor resumed since then has newer checks,
// and those run.
func (r *removedSet) dispatchedBefore(id int64, dispatched time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.ids[id]
	return ok && dispatched.Before(at)
}
