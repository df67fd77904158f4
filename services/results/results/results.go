// Package results stores check outcomes: it consumes RESULTS in batches,
// writes each batch in one statement (result rows, monitor state and the
// next slot), and acks only after the write committed.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// Config tunes the results service.
type Config struct {
	// BatchSize is the most outcomes written by one statement.
	BatchSize int
	// BatchWait is the longest a batch waits to fill.
	BatchWait time.Duration
	// Retention is how long result rows are kept; whole daily partitions
	// older than this are dropped.
	Retention time.Duration
}

// DefaultConfig writes up to 500 outcomes or every 250 ms, and keeps 30 days.
func DefaultConfig() Config {
	return Config{BatchSize: 500, BatchWait: 250 * time.Millisecond, Retention: 30 * 24 * time.Hour}
}

// Store is what the results service needs from the database.
type Store interface {
	WriteResults(ctx context.Context, results []queue.Result) (store.WriteStats, error)
	RecordFailures(ctx context.Context, failures []store.Failure) error
	RecordBadMessage(ctx context.Context, m store.BadMessage) error
	EnsurePartitions(ctx context.Context, from time.Time, days int) error
	DropPartitionsBefore(ctx context.Context, cutoff time.Time) ([]string, error)
	RollUp(ctx context.Context, now time.Time, lookback time.Duration) (int, error)
}

// Service stores outcomes.
type Service struct {
	cfg     Config
	st      Store
	js      jetstream.JetStream
	logger  *slog.Logger
	metrics metrics
}

type metrics struct {
	outcomes   *prometheus.CounterVec
	batchSize  prometheus.Histogram
	writeTime  prometheus.Histogram
	dueToStore prometheus.Histogram
	writeErrs  prometheus.Counter
	failed     *prometheus.CounterVec
}

// New builds the service.
func New(cfg Config, st Store, js jetstream.JetStream, logger *slog.Logger, reg prometheus.Registerer) *Service {
	m := metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "upwatch_results_outcomes_total",
			Help: "Outcomes received, by what became of them: stored, duplicate (already stored), discarded (monitor deleted or paused), malformed.",
		}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "upwatch_results_batch_size", Help: "Outcomes written per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		writeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "upwatch_results_write_seconds", Help: "Time to write one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		dueToStore: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "upwatch_results_due_to_stored_seconds", Help: "From a slot's due time to its outcome being stored.",
			Buckets: []float64{.05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300},
		}),
		writeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "upwatch_results_write_errors_total", Help: "Batches that failed to write and were retried.",
		}),
	}
	m.failed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "upwatch_results_failed_slots_total",
		Help: "Slots recorded as failed: their check ran out of deliveries or could not be read.",
	}, []string{"reason"})
	reg.MustRegister(m.outcomes, m.batchSize, m.writeTime, m.dueToStore, m.writeErrs, m.failed)
	return &Service{cfg: cfg, st: st, js: js, logger: logger, metrics: m}
}

// Run consumes outcomes until ctx is cancelled; the batch being written
// when it is finishes first.
func (s *Service) Run(ctx context.Context) error {
	s.logger.Info("results service started", "batch", s.cfg.BatchSize, "wait", s.cfg.BatchWait)
	var wg sync.WaitGroup
	wg.Go(func() { s.maintainPartitions(ctx) })
	wg.Go(func() { s.clearExhausted(ctx) })
	wg.Go(func() { s.rollUp(ctx) })
	defer wg.Wait()
	for ctx.Err() == nil {
		if err := s.consume(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("consuming results failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (s *Service) consume(ctx context.Context) error {
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := s.js.CreateOrUpdateConsumer(setupCtx, queue.ResultsStream, queue.ResultsConsumerConfig(4*s.cfg.BatchSize))
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", queue.ResultsConsumer, err)
	}
	// One long-lived pull subscription, batched here: a Fetch per batch
	// would subscribe and unsubscribe an inbox every time.
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * s.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("consume %s: %w", queue.ResultsConsumer, err)
	}
	// On a stop, outcomes already fetched are still stored and acked.
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	msgs := make([]jetstream.Msg, 0, s.cfg.BatchSize)
	for {
		msgs = msgs[:0]
		// Wait as long as it takes for the first outcome, then at most
		// BatchWait for the batch to fill.
		var deadline time.Time
		for len(msgs) < s.cfg.BatchSize {
			wait := time.Second
			if !deadline.IsZero() {
				wait = time.Until(deadline)
				if wait <= 0 {
					break
				}
			}
			msg, err := it.Next(jetstream.NextMaxWait(wait))
			if errors.Is(err, nats.ErrTimeout) {
				if deadline.IsZero() {
					continue
				}
				break
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if len(msgs) > 0 {
					s.store(ctx, msgs)
				}
				return nil
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				return err
			}
			if err != nil {
				s.logger.Debug("fetch results", "err", err)
				continue
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(s.cfg.BatchWait)
			}
			msgs = append(msgs, msg)
		}
		if len(msgs) > 0 {
			s.store(ctx, msgs)
		}
	}
}

// store writes one batch and acks it, retrying the write until it succeeds
// or the service stops; unacked outcomes come back after AckWait.
func (s *Service) store(ctx context.Context, msgs []jetstream.Msg) {
	results := make([]queue.Result, 0, len(msgs))
	keep := msgs[:0]
	for _, msg := range msgs {
		if msg.Subject() == queue.FailureSubject {
			s.recordFailure(ctx, msg)
			continue
		}
		var r queue.Result
		err := json.Unmarshal(msg.Data(), &r)
		if err == nil {
			err = r.Validate()
		}
		if err != nil {
			s.logger.Error("malformed result message; terminating it", "subject", msg.Subject(), "err", err)
			s.metrics.outcomes.WithLabelValues("malformed").Inc()
			s.recordBad(ctx, msg, queue.ResultsStream, "malformed result message: "+err.Error())
			_ = msg.Term()
			continue
		}
		results = append(results, r)
		keep = append(keep, msg)
	}
	if len(results) == 0 {
		return
	}
	writeCtx := context.WithoutCancel(ctx)
	for attempt := 0; ; attempt++ {
		start := time.Now()
		stats, err := s.st.WriteResults(writeCtx, results)
		if err == nil {
			stored := time.Now()
			s.metrics.writeTime.Observe(stored.Sub(start).Seconds())
			s.metrics.batchSize.Observe(float64(len(results)))
			s.metrics.outcomes.WithLabelValues("stored").Add(float64(stats.Stored))
			s.metrics.outcomes.WithLabelValues("duplicate").Add(float64(stats.Duplicates))
			s.metrics.outcomes.WithLabelValues("discarded").Add(float64(stats.Discarded))
			for _, r := range results {
				s.metrics.dueToStore.Observe(stored.Sub(r.DueAt).Seconds())
			}
			break
		}
		s.metrics.writeErrs.Inc()
		wait := min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)
		s.logger.Warn("write results failed; retrying", "batch", len(results), "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			// Stopping without a write: hand the batch back at once.
			for _, msg := range keep {
				_ = msg.Nak()
			}
			return
		case <-time.After(wait):
		}
		// Keep the batch alive in JetStream while the database is away.
		for _, msg := range keep {
			_ = msg.InProgress()
		}
	}
	for _, msg := range keep {
		if err := msg.Ack(); err != nil {
			s.logger.Warn("ack result", "subject", msg.Subject(), "err", err)
		}
	}
}

// seqOf is a message's stream sequence, 0 when unknown.
func seqOf(msg jetstream.Msg) uint64 {
	if meta, err := msg.Metadata(); err == nil {
		return meta.Sequence.Stream
	}
	return 0
}

// recordBad keeps a message nobody could read. A database failure here is
// logged, not retried: the message must not block the outcomes behind it.
func (s *Service) recordBad(ctx context.Context, msg jetstream.Msg, stream, reason string) {
	err := s.st.RecordBadMessage(context.WithoutCancel(ctx), store.BadMessage{
		Stream: stream, Subject: msg.Subject(), Seq: seqOf(msg), Reason: reason, Data: msg.Data()})
	if err != nil {
		s.logger.Error("record bad message", "subject", msg.Subject(), "err", err)
	}
}

// recordFailure stores a checker's report of a check it could not run.
func (s *Service) recordFailure(ctx context.Context, msg jetstream.Msg) {
	var f queue.Failure
	if err := json.Unmarshal(msg.Data(), &f); err != nil {
		s.recordBad(ctx, msg, queue.ResultsStream, "malformed failure report: "+err.Error())
		_ = msg.Term()
		return
	}
	ctx = context.WithoutCancel(ctx)
	err := s.st.RecordBadMessage(ctx, store.BadMessage{Stream: f.Stream, Subject: f.Subject, Seq: f.Seq, Reason: f.Reason, Data: f.Data})
	if err == nil && f.MonitorID > 0 && !f.DueAt.IsZero() {
		err = s.st.RecordFailures(ctx, []store.Failure{{MonitorID: f.MonitorID, Region: f.Region, DueAt: f.DueAt, Reason: "malformed check message"}})
		s.metrics.failed.WithLabelValues("malformed").Inc()
	}
	if err != nil {
		s.logger.Warn("record failed check; will retry", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// clearExhausted consumes the max-deliveries advisories of CHECKS: the
// check each names is still in the stream, blocking its monitor's subject.
// It is deleted and its slot recorded as failed.
func (s *Service) clearExhausted(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.consumeAdvisories(ctx)
		if err != nil && ctx.Err() == nil {
			s.logger.Warn("consuming advisories failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (s *Service) consumeAdvisories(ctx context.Context) error {
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := s.js.CreateOrUpdateConsumer(setupCtx, queue.AdvisoriesStream, queue.AdvisoriesConsumerConfig())
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", queue.AdvisoriesConsumer, err)
	}
	checks, err := s.js.Stream(setupCtx, queue.ChecksStream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", queue.ChecksStream, err)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("fetch advisories: %w", err)
		}
		for msg := range batch.Messages() {
			if err := s.clearOne(ctx, checks, msg); err != nil {
				s.logger.Warn("clear exhausted check; will retry", "err", err)
				_ = msg.NakWithDelay(time.Second)
				continue
			}
			_ = msg.Ack()
		}
	}
	return nil
}

func (s *Service) clearOne(ctx context.Context, checks jetstream.Stream, msg jetstream.Msg) error {
	var adv queue.MaxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil || adv.Stream != queue.ChecksStream {
		s.recordBad(ctx, msg, queue.AdvisoriesStream, "unreadable advisory")
		return nil
	}
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	raw, err := checks.GetMsg(opCtx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // gone already: acked late, expired, or cleared before
	}
	if err != nil {
		return fmt.Errorf("get check %d: %w", adv.StreamSeq, err)
	}
	var chk queue.Check
	if err := json.Unmarshal(raw.Data, &chk); err != nil || chk.Validate() != nil {
		if err := s.st.RecordBadMessage(opCtx, store.BadMessage{Stream: queue.ChecksStream, Subject: raw.Subject,
			Seq: raw.Sequence, Reason: "malformed check message out of deliveries", Data: raw.Data}); err != nil {
			return err
		}
	} else {
		reason := fmt.Sprintf("max deliveries (%d) exhausted", adv.Deliveries)
		if err := s.st.RecordFailures(opCtx, []store.Failure{{MonitorID: chk.MonitorID, Region: chk.Region,
			DueAt: chk.DueAt, Reason: reason}}); err != nil {
			return err
		}
		s.metrics.failed.WithLabelValues("max_deliveries").Inc()
	}
	if err := checks.DeleteMsg(opCtx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete check %d: %w", adv.StreamSeq, err)
	}
	s.logger.Warn("cleared a check that ran out of deliveries", "seq", adv.StreamSeq, "monitor", chk.MonitorID,
		"due_at", chk.DueAt, "deliveries", adv.Deliveries)
	return nil
}

// rollUp keeps the hourly rollups current, every few minutes. It looks
// back three hours so outcomes stored late, after an outage, still count.
func (s *Service) rollUp(ctx context.Context) {
	for {
		if _, err := s.st.RollUp(ctx, time.Now(), 3*time.Hour); err != nil && ctx.Err() == nil {
			s.logger.Warn("roll up results", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Minute):
		}
	}
}

// maintainPartitions keeps daily result partitions made a week ahead and
// drops the ones past retention, hourly.
func (s *Service) maintainPartitions(ctx context.Context) {
	for {
		now := time.Now()
		if err := s.st.EnsurePartitions(ctx, now.Add(-24*time.Hour), 7); err != nil && ctx.Err() == nil {
			s.logger.Warn("create result partitions", "err", err)
		}
		if s.cfg.Retention > 0 {
			dropped, err := s.st.DropPartitionsBefore(ctx, now.Add(-s.cfg.Retention))
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("drop old result partitions", "err", err)
			}
			if len(dropped) > 0 {
				s.logger.Info("dropped result partitions past retention", "partitions", dropped)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
	}
}
