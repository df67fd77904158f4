// Package queue defines the JetStream streams, subjects, consumers and
// messages that connect the services. It is the one place they are defined;
// every service calls Ensure at start, so whichever starts first creates
// them and the rest find them as they should be.
package queue

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/monitor"
)

// Stream names, fixed so operators can inspect them with the nats CLI.
const (
	ChecksStream  = "CHECKS"
	ResultsStream = "RESULTS"
	// AdvisoriesStream keeps JetStream's max-deliveries advisories for
	// CHECKS, which are otherwise core NATS messages lost when nobody
	// listens: each names a message that would block its subject.
	AdvisoriesStream = "CHECK_ADVISORIES"
)

// AdvisoriesConsumer is the durable consumer the results services share
// to clear checks that ran out of deliveries.
const AdvisoriesConsumer = "results-advisories"

// maxDeliveriesSubjects match the max-deliveries advisories of every
// consumer of CHECKS.
const maxDeliveriesSubjects = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + ChecksStream + ".*"

// FailureSubject carries reports of checks that failed to run (a malformed
// message); the results service records them.
const FailureSubject = "results.failed"

// Lanes split a region's checks by urgency.
const (
	// LanePriority carries manual checks and re-checks of failing
	// monitors; checkers drain it before the scheduled lane.
	LanePriority  = "priority"
	LaneScheduled = "scheduled"
)

// Lanes lists every lane, the one drained first first.
var Lanes = []string{LanePriority, LaneScheduled}

// ResultsConsumer is the durable consumer shared by every results service.
const ResultsConsumer = "results"

// Options are the stream settings an operator may change. Every service
// takes the same flags so that whichever creates or updates the streams
// applies the same configuration.
type Options struct {
	// ChecksMaxMsgs caps the whole CHECKS stream, a safety net under the
	// one-per-subject limit.
	ChecksMaxMsgs int64
	// Replicas is the JetStream replication factor (1, 3 or 5).
	Replicas int
	// DuplicateWindow is how long message ids are remembered.
	DuplicateWindow time.Duration
}

// DefaultOptions are the settings used when no flag changes them.
func DefaultOptions() Options {
	return Options{ChecksMaxMsgs: 10_000, Replicas: 1, DuplicateWindow: 2 * time.Minute}
}

// RegisterFlags binds the options to flags with environment fallbacks.
func (o *Options) RegisterFlags(fs *flag.FlagSet, env func(string, string) string) {
	d := DefaultOptions()
	fs.Int64Var(&o.ChecksMaxMsgs, "checks-max-msgs", envInt64(env, "CHECKS_MAX_MSGS", d.ChecksMaxMsgs),
		"safety cap on messages in the CHECKS stream (env CHECKS_MAX_MSGS)")
	fs.IntVar(&o.Replicas, "stream-replicas", int(envInt64(env, "STREAM_REPLICAS", int64(d.Replicas))),
		"JetStream replicas for CHECKS and RESULTS (env STREAM_REPLICAS)")
	fs.DurationVar(&o.DuplicateWindow, "dedup-window", d.DuplicateWindow, "how long JetStream remembers message ids")
}

func envInt64(env func(string, string) string, key string, def int64) int64 {
	v := env(key, "")
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return def
	}
	return n
}

// ChecksConfig is the CHECKS stream: a work queue holding at most one due
// check per (region, lane, monitor) subject. A message leaves the stream
// when it is acked, terminated or when its TTL runs out.
func ChecksConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:                 ChecksStream,
		Description:          "due checks: one pending message per region, lane and monitor",
		Subjects:             []string{"checks.>"},
		Retention:            jetstream.WorkQueuePolicy,
		Storage:              jetstream.FileStorage,
		Replicas:             o.Replicas,
		MaxMsgs:              o.ChecksMaxMsgs,
		MaxMsgsPerSubject:    1,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		AllowMsgTTL:          true,
		Duplicates:           o.DuplicateWindow,
	}
}

// ResultsConfig is the RESULTS stream: outcomes waiting to be stored. It is
// a work queue too, so stored outcomes do not accumulate.
func ResultsConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        ResultsStream,
		Description: "check outcomes waiting to be stored",
		Subjects:    []string{"results.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Discard:     jetstream.DiscardOld,
		Duplicates:  o.DuplicateWindow,
	}
}

// AdvisoriesConfig captures the max-deliveries advisories of CHECKS.
func AdvisoriesConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AdvisoriesStream,
		Description: "max-deliveries advisories of CHECKS, kept until the results service clears the check",
		Subjects:    []string{maxDeliveriesSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      24 * time.Hour,
	}
}

// AdvisoriesConsumerConfig is the consumer of AdvisoriesStream.
func AdvisoriesConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       AdvisoriesConsumer,
		Description:   "results services: clear and record checks that ran out of deliveries",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// MaxDeliveriesAdvisory is JetStream's advisory that a message ran out of
// deliveries; only the fields upwatch reads.
type MaxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Ensure creates or updates the streams.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) error {
	for _, cfg := range []jetstream.StreamConfig{ChecksConfig(o), ResultsConfig(o), AdvisoriesConfig(o)} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// CheckSubject is the subject of one monitor's due checks in a region and lane.
func CheckSubject(region, lane string, monitorID int64) string {
	return "checks." + region + "." + lane + "." + strconv.FormatInt(monitorID, 10)
}

// ResultSubject is the subject of one monitor's outcomes.
func ResultSubject(monitorID int64) string {
	return "results." + strconv.FormatInt(monitorID, 10)
}

// CheckerConsumer names the durable consumer shared by every checker of a
// region and lane. WorkQueue streams refuse overlapping filters, so there is
// exactly one per (region, lane).
func CheckerConsumer(region, lane string) string {
	return "checker-" + region + "-" + lane
}

// CheckerConsumerConfig is the consumer every checker of a region and lane
// shares. A check whose checker vanished is redelivered after ackWait, the
// next time after twice that; after maxDeliver deliveries JetStream gives
// up and its advisory lets the results service clear and record the slot.
func CheckerConsumerConfig(region, lane string, ackWait time.Duration, maxDeliver, maxAckPending int) jetstream.ConsumerConfig {
	backoff := []time.Duration{ackWait}
	if maxDeliver > 1 {
		backoff = append(backoff, 2*ackWait)
	}
	return jetstream.ConsumerConfig{
		Durable:       CheckerConsumer(region, lane),
		Description:   "checkers of region " + region + ", lane " + lane,
		FilterSubject: "checks." + region + "." + lane + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		BackOff:       backoff,
		MaxDeliver:    maxDeliver,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// ResultsConsumerConfig is the consumer shared by every results service.
func ResultsConsumerConfig(maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ResultsConsumer,
		Description:   "results services: store outcomes",
		FilterSubject: "results.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// CheckMsgID is the Nats-Msg-Id of a dispatch: the first attempt at a slot
// is <monitor>-<region>-<slot as Unix milliseconds>; a re-dispatch after the lease ran out is a
// new attempt and gets its own id, or the dedup window would drop it.
func CheckMsgID(monitorID int64, region string, dueAt time.Time, attempt int) string {
	id := strconv.FormatInt(monitorID, 10) + "-" + region + "-" + strconv.FormatInt(dueAt.UnixMilli(), 10)
	if attempt > 1 {
		id += "-a" + strconv.Itoa(attempt)
	}
	return id
}

// ManualCheckMsgID is the Nats-Msg-Id of a manual check requested at at.
func ManualCheckMsgID(monitorID int64, region string, at time.Time) string {
	return strconv.FormatInt(monitorID, 10) + "-" + region + "-m" + strconv.FormatInt(at.UnixMilli(), 10)
}

// Check is a due check: everything a checker needs to run it without
// asking the database.
type Check struct {
	MonitorID    int64            `json:"monitor_id"`
	Region       string           `json:"region"`
	Lane         string           `json:"lane"`
	Kind         string           `json:"kind"`
	Target       string           `json:"target"`
	Settings     monitor.Settings `json:"settings"`
	TimeoutMS    int64            `json:"timeout_ms"`
	DueAt        time.Time        `json:"due_at"`
	Attempt      int              `json:"attempt"`
	DispatchedAt time.Time        `json:"dispatched_at"`
	// Manual marks a check someone asked for; its outcome does not move
	// the schedule.
	Manual bool `json:"manual,omitempty"`
}

// Timeout is the check's time limit.
func (c *Check) Timeout() time.Duration { return time.Duration(c.TimeoutMS) * time.Millisecond }

// Validate refuses a message that cannot be run.
func (c *Check) Validate() error {
	switch {
	case c.MonitorID <= 0:
		return errors.New("monitor_id missing")
	case c.DueAt.IsZero():
		return errors.New("due_at missing")
	case c.Kind != monitor.KindHTTP && c.Kind != monitor.KindTCP:
		return fmt.Errorf("unknown kind %q", c.Kind)
	case c.TimeoutMS <= 0:
		return errors.New("timeout_ms missing")
	}
	return nil
}

// Result is the outcome of one check.
type Result struct {
	MonitorID  int64     `json:"monitor_id"`
	Region     string    `json:"region"`
	DueAt      time.Time `json:"due_at"`
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Up         bool      `json:"up"`
	LatencyMS  float64   `json:"latency_ms"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	Manual     bool      `json:"manual,omitempty"`
}

// Validate refuses an outcome that cannot be stored.
func (r *Result) Validate() error {
	switch {
	case r.MonitorID <= 0:
		return errors.New("monitor_id missing")
	case r.DueAt.IsZero():
		return errors.New("due_at missing")
	case r.StartedAt.IsZero() || r.FinishedAt.IsZero():
		return errors.New("started_at or finished_at missing")
	}
	return nil
}

// errCodeStoreFailed is JetStream's JSStreamStoreFailedF: storing a message
// failed, for any of several reasons named only in the description.
const errCodeStoreFailed jetstream.ErrorCode = 10077

// Failure reports a check message that could not be run.
type Failure struct {
	Stream  string `json:"stream"`
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Reason  string `json:"reason"`
	Data    []byte `json:"data,omitempty"`
	// The slot, when the message said which.
	MonitorID int64     `json:"monitor_id,omitempty"`
	Region    string    `json:"region,omitempty"`
	DueAt     time.Time `json:"due_at,omitzero"`
}

// IsAlreadyPending reports whether a publish to CHECKS was refused because
// the subject already holds a pending message. JetStream gives the same code
// (10077) for the whole-stream limits, so the description decides; the
// server gives only a string here.
func IsAlreadyPending(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStoreFailed &&
		strings.Contains(apiErr.Description, "maximum messages per subject exceeded")
}

// IsStreamFull reports whether a publish was refused by a whole-stream
// limit (the MaxMsgs safety cap or a size limit).
func IsStreamFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeStoreFailed {
		return false
	}
	d := apiErr.Description
	return !strings.Contains(d, "per subject") &&
		(strings.Contains(d, "maximum messages exceeded") || strings.Contains(d, "maximum bytes exceeded"))
}
