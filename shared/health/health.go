// Package health judges the check queue the way an operator would: how
// much is waiting and for how long, whether work gets done as fast as it is
// due, what failed, and how late checks start. The command line and the API
// both report it.
package health

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// Status values, worst last.
const (
	OK       = "OK"
	Warning  = "WARNING"
	Critical = "CRITICAL"
	Unknown  = "UNKNOWN"
)

// ExitCode is the monitoring-plugin convention: 0 OK, 1 WARNING,
// 2 CRITICAL, 3 UNKNOWN.
func ExitCode(status string) int {
	switch status {
	case OK:
		return 0
	case Warning:
		return 1
	case Critical:
		return 2
	default:
		return 3
	}
}

// Thresholds decide the status. Queue sizes scale with the fleet: a
// fraction of the active monitors, with a floor so a small fleet is not
// judged by tiny numbers.
type Thresholds struct {
	PendingWarn, PendingCrit       float64 // waiting messages, as a fraction of active monitors
	OldestWarn, OldestCrit         time.Duration
	ProcessedWarn, ProcessedCrit   float64 // processed per minute, as a fraction of expected; below is bad
	FailedWarn, FailedCrit         float64 // failed slots in the last hour, as a fraction of expected checks
	GrowthWarn, GrowthCrit         float64 // queue growth per minute, as a fraction of active monitors
	LagWarn, LagCrit               time.Duration
	StreamFullCrit                 float64 // queue depth as a fraction of the stream cap
	PendingFloor, GrowthFloor      float64
	FailedWarnFloor, FailedCritMin float64
}

// DefaultThresholds are documented in the README.
func DefaultThresholds() Thresholds {
	return Thresholds{
		PendingWarn: 0.10, PendingCrit: 0.50, PendingFloor: 100,
		OldestWarn: 30 * time.Second, OldestCrit: 2 * time.Minute,
		ProcessedWarn: 0.80, ProcessedCrit: 0.50,
		FailedWarn: 0.001, FailedCrit: 0.01, FailedWarnFloor: 1, FailedCritMin: 10,
		GrowthWarn: 0.05, GrowthCrit: 0.20, GrowthFloor: 50,
		LagWarn: 2 * time.Second, LagCrit: 10 * time.Second,
		StreamFullCrit: 0.90,
	}
}

// RegisterFlags binds the thresholds to flags.
func (t *Thresholds) RegisterFlags(fs *flag.FlagSet) {
	fs.Float64Var(&t.PendingWarn, "pending-warn", t.PendingWarn, "WARNING when waiting messages exceed this fraction of active monitors (at least -pending-floor)")
	fs.Float64Var(&t.PendingCrit, "pending-crit", t.PendingCrit, "CRITICAL when waiting messages exceed this fraction of active monitors")
	fs.Float64Var(&t.PendingFloor, "pending-floor", t.PendingFloor, "smallest waiting-message count that can warn")
	fs.DurationVar(&t.OldestWarn, "oldest-warn", t.OldestWarn, "WARNING when the oldest message is older")
	fs.DurationVar(&t.OldestCrit, "oldest-crit", t.OldestCrit, "CRITICAL when the oldest message is older")
	fs.Float64Var(&t.ProcessedWarn, "processed-warn", t.ProcessedWarn, "WARNING when checks stored per minute fall below this fraction of the checks due per minute")
	fs.Float64Var(&t.ProcessedCrit, "processed-crit", t.ProcessedCrit, "CRITICAL below this fraction")
	fs.Float64Var(&t.FailedWarn, "failed-warn", t.FailedWarn, "WARNING when failed slots in the last hour exceed this fraction of the checks due in an hour (at least 1)")
	fs.Float64Var(&t.FailedCrit, "failed-crit", t.FailedCrit, "CRITICAL above this fraction (at least 10)")
	fs.Float64Var(&t.GrowthWarn, "growth-warn", t.GrowthWarn, "WARNING when the queue grows per minute by more than this fraction of active monitors (at least -growth-floor)")
	fs.Float64Var(&t.GrowthCrit, "growth-crit", t.GrowthCrit, "CRITICAL above this fraction")
	fs.Float64Var(&t.GrowthFloor, "growth-floor", t.GrowthFloor, "smallest growth per minute that can warn")
	fs.DurationVar(&t.LagWarn, "lag-warn", t.LagWarn, "WARNING when scheduling lag p99 exceeds this")
	fs.DurationVar(&t.LagCrit, "lag-crit", t.LagCrit, "CRITICAL when scheduling lag p99 exceeds this")
	fs.Float64Var(&t.StreamFullCrit, "full-crit", t.StreamFullCrit, "CRITICAL when CHECKS holds this fraction of its message cap")
}

// Consumer is one checker consumer's view of the queue.
type Consumer struct {
	Name        string `json:"name"`
	Lane        string `json:"lane"`
	Pending     uint64 `json:"pending"`
	InFlight    int    `json:"in_flight"`
	Redelivered int    `json:"redelivered"`
	Waiting     int    `json:"waiting_pulls"`
}

// Report is the queue's health.
type Report struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons"`

	Depth                uint64  `json:"depth"`
	StreamCap            int64   `json:"stream_cap"`
	Pending              uint64  `json:"pending"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
	InFlight             int     `json:"in_flight"`
	Redelivered          int     `json:"redelivered"`
	ProcessedPerMinute   float64 `json:"processed_per_minute"`
	ExpectedPerMinute    float64 `json:"expected_per_minute"`
	FailedLastHour       int64   `json:"failed_last_hour"`
	GrowthPerMinute      float64 `json:"growth_per_minute"`
	LagP50Seconds        float64 `json:"lag_p50_seconds"`
	LagP99Seconds        float64 `json:"lag_p99_seconds"`
	ActiveMonitors       int64   `json:"active_monitors"`
	WindowSeconds        float64 `json:"window_seconds"`

	Consumers []Consumer `json:"consumers"`
}

// Collect measures the queue. It samples the stream twice, window apart,
// to tell growth from a standing queue.
func Collect(ctx context.Context, js jetstream.JetStream, st *store.Store, window time.Duration) (Report, error) {
	r := Report{Reasons: []string{}, Consumers: []Consumer{}}
	stream, err := js.Stream(ctx, queue.ChecksStream)
	if err != nil {
		return r, fmt.Errorf("open stream %s: %w", queue.ChecksStream, err)
	}
	stats, err := st.QueueStats(ctx)
	if err != nil {
		return r, err
	}
	growth, err := measureGrowth(ctx, stream, window)
	if err != nil {
		return r, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return r, fmt.Errorf("stream info: %w", err)
	}
	r.WindowSeconds = window.Seconds()
	r.Depth = info.State.Msgs
	r.StreamCap = info.Config.MaxMsgs
	r.GrowthPerMinute = growth
	if info.State.Msgs > 0 && !info.State.FirstTime.IsZero() {
		r.OldestPendingSeconds = math.Max(0, time.Since(info.State.FirstTime).Seconds())
	}
	consumers := stream.ListConsumers(ctx)
	for ci := range consumers.Info() {
		if !strings.HasPrefix(ci.Name, "checker-") {
			continue
		}
		lane := ci.Name[strings.LastIndex(ci.Name, "-")+1:]
		r.Consumers = append(r.Consumers, Consumer{Name: ci.Name, Lane: lane, Pending: ci.NumPending,
			InFlight: ci.NumAckPending, Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting})
		r.InFlight += ci.NumAckPending
		r.Redelivered += ci.NumRedelivered
	}
	if err := consumers.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return r, fmt.Errorf("list consumers: %w", err)
	}
	r.Pending = info.State.Msgs - min(info.State.Msgs, uint64(max(r.InFlight, 0)))
	r.ProcessedPerMinute = stats.StoredLastMinute
	r.ExpectedPerMinute = stats.ExpectedPerMinute
	r.FailedLastHour = stats.FailedLastHour
	r.LagP50Seconds, r.LagP99Seconds = stats.LagP50, stats.LagP99
	r.ActiveMonitors = stats.ActiveMonitors
	return r, nil
}

// growthBucket is the span whose smallest depth stands for the queue at
// one end of the window. The ticker claims a tick's worth of checks at
// once, so the depth is a sawtooth with the tick as its period: two single
// samples would mostly measure where in the tick each fell. The smallest
// depth in a tick-long span is the standing queue, whatever the phase.
const growthBucket = time.Second

// measureGrowth samples the depth of CHECKS over window and returns how
// fast the standing queue grows, in messages per minute.
func measureGrowth(ctx context.Context, stream jetstream.Stream, window time.Duration) (float64, error) {
	if window < 2*growthBucket {
		return 0, nil
	}
	const every = 100 * time.Millisecond
	start := time.Now()
	firstMin, lastMin := uint64(math.MaxUint64), uint64(math.MaxUint64)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("stream info: %w", err)
		}
		elapsed := time.Since(start)
		if elapsed < growthBucket {
			firstMin = min(firstMin, info.State.Msgs)
		}
		if elapsed > window-growthBucket {
			lastMin = min(lastMin, info.State.Msgs)
		}
		if elapsed >= window {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(every):
		}
	}
	span := window - growthBucket
	return (float64(lastMin) - float64(firstMin)) * float64(time.Minute) / float64(span), nil
}

// Evaluate sets Status and Reasons from the thresholds.
func (r *Report) Evaluate(t Thresholds) {
	r.Status, r.Reasons = OK, []string{}
	raise := func(level, reason string, args ...any) {
		if rank(level) > rank(r.Status) {
			r.Status = level
		}
		r.Reasons = append(r.Reasons, level+": "+fmt.Sprintf(reason, args...))
	}
	fleet := float64(r.ActiveMonitors)
	pendingWarn := math.Max(t.PendingFloor, t.PendingWarn*fleet)
	pendingCrit := math.Max(t.PendingFloor, t.PendingCrit*fleet)
	switch p := float64(r.Pending); {
	case p > pendingCrit:
		raise(Critical, "%d messages waiting (critical above %.0f)", r.Pending, pendingCrit)
	case p > pendingWarn:
		raise(Warning, "%d messages waiting (warning above %.0f)", r.Pending, pendingWarn)
	}
	if r.StreamCap > 0 && float64(r.Depth) >= t.StreamFullCrit*float64(r.StreamCap) {
		raise(Critical, "CHECKS holds %d of its cap of %d messages: the ticker cannot dispatch", r.Depth, r.StreamCap)
	}
	switch age := time.Duration(r.OldestPendingSeconds * float64(time.Second)); {
	case age > t.OldestCrit:
		raise(Critical, "oldest message is %s old (critical above %s)", age.Round(time.Second), t.OldestCrit)
	case age > t.OldestWarn:
		raise(Warning, "oldest message is %s old (warning above %s)", age.Round(time.Second), t.OldestWarn)
	}
	if r.ExpectedPerMinute >= 1 {
		ratio := r.ProcessedPerMinute / r.ExpectedPerMinute
		switch {
		case ratio < t.ProcessedCrit:
			raise(Critical, "%.0f checks stored in the last minute, %.0f due (critical below %.0f%%)", r.ProcessedPerMinute, r.ExpectedPerMinute, 100*t.ProcessedCrit)
		case ratio < t.ProcessedWarn:
			raise(Warning, "%.0f checks stored in the last minute, %.0f due (warning below %.0f%%)", r.ProcessedPerMinute, r.ExpectedPerMinute, 100*t.ProcessedWarn)
		}
	}
	perHour := 60 * r.ExpectedPerMinute
	failedCrit := math.Max(t.FailedCritMin, t.FailedCrit*perHour)
	failedWarn := math.Max(t.FailedWarnFloor, t.FailedWarn*perHour)
	switch f := float64(r.FailedLastHour); {
	case f > failedCrit:
		raise(Critical, "%d failed slots in the last hour (critical above %.0f)", r.FailedLastHour, failedCrit)
	case f >= failedWarn:
		raise(Warning, "%d failed slots in the last hour (warning from %.0f)", r.FailedLastHour, failedWarn)
	}
	growthWarn := math.Max(t.GrowthFloor, t.GrowthWarn*fleet)
	growthCrit := math.Max(t.GrowthFloor, t.GrowthCrit*fleet)
	switch g := r.GrowthPerMinute; {
	case g > growthCrit:
		raise(Critical, "queue growing by %.0f messages a minute (critical above %.0f)", g, growthCrit)
	case g > growthWarn:
		raise(Warning, "queue growing by %.0f messages a minute (warning above %.0f)", g, growthWarn)
	}
	switch lag := time.Duration(r.LagP99Seconds * float64(time.Second)); {
	case lag > t.LagCrit:
		raise(Critical, "scheduling lag p99 %s (critical above %s)", lag.Round(time.Millisecond), t.LagCrit)
	case lag > t.LagWarn:
		raise(Warning, "scheduling lag p99 %s (warning above %s)", lag.Round(time.Millisecond), t.LagWarn)
	}
}

func rank(status string) int {
	switch status {
	case Warning:
		return 1
	case Critical:
		return 2
	case Unknown:
		return 3
	default:
		return 0
	}
}
