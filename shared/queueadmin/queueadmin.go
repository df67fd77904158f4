// Package queueadmin lets an operator look into CHECKS and empty it
// safely.
package queueadmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// Entry is one message in CHECKS.
type Entry struct {
	Seq        uint64    `json:"seq"`
	Subject    string    `json:"subject"`
	MonitorID  int64     `json:"monitor_id"`
	Region     string    `json:"region"`
	Lane       string    `json:"lane"`
	DueAt      time.Time `json:"due_at"`
	Attempt    int       `json:"attempt"`
	Manual     bool      `json:"manual,omitempty"`
	AgeSeconds float64   `json:"age_seconds"`
	// State is "in flight" once a checker has it, "pending" before.
	State string `json:"state"`
}

// Inspect lists up to limit messages of CHECKS, oldest first.
func Inspect(ctx context.Context, js jetstream.JetStream, limit int) ([]Entry, int, error) {
	stream, err := js.Stream(ctx, queue.ChecksStream)
	if err != nil {
		return nil, 0, fmt.Errorf("open stream %s: %w", queue.ChecksStream, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("checks.>"))
	if err != nil {
		return nil, 0, fmt.Errorf("stream info: %w", err)
	}
	// A consumer has delivered every message up to its delivered stream
	// sequence; on a work queue those still here are in flight.
	delivered := map[string]uint64{}
	consumers := stream.ListConsumers(ctx)
	for ci := range consumers.Info() {
		delivered[ci.Config.FilterSubject] = ci.Delivered.Stream
	}
	if err := consumers.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, 0, fmt.Errorf("list consumers: %w", err)
	}
	var out []Entry
	now := time.Now()
	for subject := range info.State.Subjects {
		msg, err := stream.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // acked meanwhile
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", subject, err)
		}
		e := Entry{Seq: msg.Sequence, Subject: subject, AgeSeconds: now.Sub(msg.Time).Seconds(), State: "pending"}
		var c queue.Check
		if json.Unmarshal(msg.Data, &c) == nil {
			e.MonitorID, e.Region, e.Lane, e.DueAt, e.Attempt, e.Manual = c.MonitorID, c.Region, c.Lane, c.DueAt, c.Attempt, c.Manual
			if msg.Sequence <= delivered["checks."+c.Region+"."+c.Lane+".>"] {
				e.State = "in flight"
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	total := len(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, total, nil
}

// Flush empties CHECKS and makes every monitor with a dispatch in flight
// due again, so the next tick dispatches whatever is due. Checks already
// running finish; their outcomes and the new dispatch's share a slot, so at
// most one is stored.
func Flush(ctx context.Context, js jetstream.JetStream, st *store.Store) (purged uint64, reset int64, err error) {
	stream, err := js.Stream(ctx, queue.ChecksStream)
	if err != nil {
		return 0, 0, fmt.Errorf("open stream %s: %w", queue.ChecksStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream info: %w", err)
	}
	if err := stream.Purge(ctx); err != nil {
		return 0, 0, fmt.Errorf("purge %s: %w", queue.ChecksStream, err)
	}
	reset, err = st.ResetLeases(ctx)
	if err != nil {
		return info.State.Msgs, 0, err
	}
	return info.State.Msgs, reset, nil
}
