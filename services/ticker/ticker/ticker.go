// Package ticker is the scheduler: every tick it claims the monitors that
// are due and publishes one check message for each. It is the only thing
// that creates check messages.
package ticker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// Config tunes the ticker.
type Config struct {
	// Region whose monitors this ticker dispatches.
	Region string
	// Tick is how often due monitors are claimed; it is a floor under
	// scheduling lag.
	Tick time.Duration
	// Batch is the most monitors claimed by one statement; a tick claims
	// batches until none are left.
	Batch int
	// MinLease is the shortest time a claimed monitor stays claimed without
	// an outcome before it is dispatched again.
	MinLease time.Duration
	// Lookahead claims monitors due within this much of now; checkers hold
	// each check until its due time. One tick ahead takes the tick out of
	// the scheduling lag.
	Lookahead time.Duration
}

// DefaultConfig is a 1 s tick.
func DefaultConfig() Config {
	return Config{Region: "default", Tick: time.Second, Batch: 2000, MinLease: 45 * time.Second, Lookahead: time.Second}
}

// Store is what the ticker needs from the database.
type Store interface {
	ClaimDue(ctx context.Context, region string, limit int, minLease, lookahead time.Duration) ([]store.Claimed, error)
	Unclaim(ctx context.Context, ids []int64) error
	ClaimManual(ctx context.Context, region string, limit int, minLease time.Duration) ([]store.Claimed, error)
	UnclaimManual(ctx context.Context, claimed []store.Claimed) error
}

// Ticker dispatches due checks.
type Ticker struct {
	cfg     Config
	st      Store
	js      jetstream.JetStream
	logger  *slog.Logger
	metrics metrics
}

type metrics struct {
	dispatches *prometheus.CounterVec
	coalesced  prometheus.Counter
	tickTime   prometheus.Histogram
	claimed    prometheus.Histogram
	depth      *prometheus.GaugeVec
}

// Dispatch outcomes, the label values of upwatch_ticker_dispatches_total.
const (
	outcomePublished      = "published"
	outcomeAlreadyPending = "already_pending"
	outcomeDuplicate      = "duplicate"
	outcomeStreamFull     = "stream_full"
	outcomeError          = "error"
)

// New builds a ticker.
func New(cfg Config, st Store, js jetstream.JetStream, logger *slog.Logger, reg prometheus.Registerer) *Ticker {
	m := metrics{
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "upwatch_ticker_dispatches_total",
			Help: "Check dispatches by outcome: published, already_pending (the subject holds one), duplicate (dedup window), stream_full, error.",
		}, []string{"outcome"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "upwatch_ticker_coalesced_slots_total",
			Help: "Missed slots folded into a later check and recorded as skipped.",
		}),
		tickTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "upwatch_ticker_tick_seconds",
			Help:    "Time to claim and publish everything due in one tick.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		claimed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "upwatch_ticker_claimed_per_tick",
			Help:    "Monitors claimed in one tick.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
	}
	m.depth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "upwatch_queue_depth",
		Help: "Messages in a stream (CHECKS: due checks pending or in flight), sampled by the ticker.",
	}, []string{"stream"})
	reg.MustRegister(m.dispatches, m.coalesced, m.tickTime, m.claimed, m.depth)
	for _, o := range []string{outcomePublished, outcomeAlreadyPending, outcomeDuplicate, outcomeStreamFull, outcomeError} {
		m.dispatches.WithLabelValues(o)
	}
	return &Ticker{cfg: cfg, st: st, js: js, logger: logger, metrics: m}
}

// Run ticks until ctx is cancelled.
func (t *Ticker) Run(ctx context.Context) error {
	t.logger.Info("ticker started", "region", t.cfg.Region, "tick", t.cfg.Tick)
	var wg sync.WaitGroup
	wg.Go(func() { t.sampleDepth(ctx) })
	defer wg.Wait()
	tick := time.NewTicker(t.cfg.Tick)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
		err := t.Tick(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errStreamFull):
			// The safety cap is reached: publishing harder cannot help.
			// Back off, doubling up to 30 s, until there is room again.
			backoff = min(max(2*backoff, t.cfg.Tick), 30*time.Second)
			t.logger.Warn("CHECKS stream is full; backing off", "backoff", backoff)
		case err != nil:
			backoff = min(max(2*backoff, t.cfg.Tick), 10*time.Second)
			t.logger.Error("tick failed", "err", err, "retry_in", backoff)
		default:
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

var errStreamFull = errors.New("checks stream is full")

// Tick claims and dispatches everything due now, batch by batch.
func (t *Ticker) Tick(ctx context.Context) error {
	start := time.Now()
	defer func() { t.metrics.tickTime.Observe(time.Since(start).Seconds()) }()
	total := 0
	defer func() { t.metrics.claimed.Observe(float64(total)) }()
	manual, err := t.st.ClaimManual(ctx, t.cfg.Region, t.cfg.Batch, t.cfg.MinLease)
	if err != nil {
		return err
	}
	if len(manual) > 0 {
		total += len(manual)
		if err := t.dispatch(ctx, manual); err != nil {
			return err
		}
	}
	for {
		claimed, err := t.st.ClaimDue(ctx, t.cfg.Region, t.cfg.Batch, t.cfg.MinLease, t.cfg.Lookahead)
		if err != nil {
			return err
		}
		total += len(claimed)
		if len(claimed) == 0 {
			return nil
		}
		if err := t.dispatch(ctx, claimed); err != nil {
			return err
		}
		if len(claimed) < t.cfg.Batch {
			return nil
		}
	}
}

// dispatch publishes one message per claimed monitor, all in flight at
// once, then sorts the acks. Monitors whose message was not stored are
// handed back so the next tick claims them again.
func (t *Ticker) dispatch(ctx context.Context, claimed []store.Claimed) error {
	now := time.Now()
	futures := make([]jetstream.PubAckFuture, len(claimed))
	var unclaim []store.Claimed
	var firstErr error
	for i, c := range claimed {
		if c.Coalesced > 0 {
			t.metrics.coalesced.Add(float64(c.Coalesced))
		}
		lane := c.Lane
		if lane == "" {
			lane = queue.LaneScheduled
		}
		check := queue.Check{
			MonitorID: c.ID, Region: t.cfg.Region, Lane: lane,
			Kind: c.Kind, Target: c.Target, Settings: c.Settings, TimeoutMS: c.TimeoutMS,
			DueAt: c.DueAt, Attempt: c.Attempt, DispatchedAt: now, Manual: c.Manual,
		}
		data, err := json.Marshal(&check)
		if err != nil {
			return fmt.Errorf("encode check of monitor %d: %w", c.ID, err)
		}
		// The message expires before the lease runs out (less the
		// lookahead, when the ticker claims it again), so a re-dispatch
		// never finds the old message still holding the subject.
		ttl := max(c.Lease-t.cfg.Lookahead-time.Second, time.Second)
		msgID := queue.CheckMsgID(c.ID, t.cfg.Region, c.DueAt, c.Attempt)
		if c.Manual {
			msgID = queue.ManualCheckMsgID(c.ID, t.cfg.Region, c.DueAt)
		}
		f, err := t.js.PublishAsync(queue.CheckSubject(t.cfg.Region, lane, c.ID), data,
			jetstream.WithMsgID(msgID), jetstream.WithMsgTTL(ttl))
		if err != nil {
			t.metrics.dispatches.WithLabelValues(outcomeError).Inc()
			unclaim = append(unclaim, c)
			firstErr = cmpErr(firstErr, fmt.Errorf("publish check of monitor %d: %w", c.ID, err))
			continue
		}
		futures[i] = f
	}
	full := false
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				t.metrics.dispatches.WithLabelValues(outcomeDuplicate).Inc()
			} else {
				t.metrics.dispatches.WithLabelValues(outcomePublished).Inc()
			}
		case err := <-f.Err():
			switch {
			case queue.IsAlreadyPending(err):
				// The subject holds a check of this monitor that is pending
				// or in flight; the claim's lease waits for its outcome.
				t.metrics.dispatches.WithLabelValues(outcomeAlreadyPending).Inc()
			case queue.IsStreamFull(err):
				t.metrics.dispatches.WithLabelValues(outcomeStreamFull).Inc()
				unclaim = append(unclaim, claimed[i])
				full = true
			default:
				t.metrics.dispatches.WithLabelValues(outcomeError).Inc()
				unclaim = append(unclaim, claimed[i])
				firstErr = cmpErr(firstErr, fmt.Errorf("publish check of monitor %d: %w", claimed[i].ID, err))
			}
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// No ack in time: the message may or may not be stored. Keep
			// the lease: if it was stored it will be checked, and if not the
			// lease runs out and the slot is dispatched again.
			t.metrics.dispatches.WithLabelValues(outcomeError).Inc()
			firstErr = cmpErr(firstErr, fmt.Errorf("publish check of monitor %d: no ack within 10s", claimed[i].ID))
		}
	}
	if err := t.unclaim(context.WithoutCancel(ctx), unclaim); err != nil {
		return err
	}
	if full {
		return errStreamFull
	}
	return firstErr
}

// unclaim hands back claims whose message was not stored.
func (t *Ticker) unclaim(ctx context.Context, claimed []store.Claimed) error {
	var ids []int64
	var manual []store.Claimed
	for _, c := range claimed {
		if c.Manual {
			manual = append(manual, c)
		} else {
			ids = append(ids, c.ID)
		}
	}
	if err := t.st.Unclaim(ctx, ids); err != nil {
		return err
	}
	return t.st.UnclaimManual(ctx, manual)
}

// sampleDepth exports the depth of the streams every few seconds.
func (t *Ticker) sampleDepth(ctx context.Context) {
	for {
		for _, name := range []string{queue.ChecksStream, queue.ResultsStream} {
			infoCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if s, err := t.js.Stream(infoCtx, name); err == nil {
				if info, err := s.Info(infoCtx); err == nil {
					t.metrics.depth.WithLabelValues(name).Set(float64(info.State.Msgs))
				}
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}
