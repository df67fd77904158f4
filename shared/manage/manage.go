// Package manage changes monitors the way both the API and the command line
// must: validated, stored, and with the queue kept consistent — a deleted
// or paused monitor's pending check is taken off CHECKS and counted, and
// checkers are told to drop one they already hold.
package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// RemovedSubject carries the id of a monitor that was deleted or paused, so
// checkers drop a check of it they already fetched.
const RemovedSubject = "upwatch.monitors.removed"

// Manager changes monitors.
type Manager struct {
	st     *store.Store
	nc     *nats.Conn          // nil: no queue clean-up (the queue is not reachable)
	js     jetstream.JetStream // nil with nc
	logger *slog.Logger
}

// New builds a manager. nc may be nil when NATS is not configured; pending
// checks of removed monitors are then discarded by the checkers and the
// results service instead.
func New(st *store.Store, nc *nats.Conn, logger *slog.Logger) (*Manager, error) {
	m := &Manager{st: st, nc: nc, logger: logger}
	if nc != nil {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		m.js = js
	}
	return m, nil
}

// Create validates and stores a new monitor.
func (m *Manager) Create(ctx context.Context, spec monitor.Spec) (store.Monitor, error) {
	if err := spec.Normalize(); err != nil {
		return store.Monitor{}, err
	}
	return m.st.CreateMonitor(ctx, spec)
}

// Apply creates the monitor or updates the one with the same name.
func (m *Manager) Apply(ctx context.Context, spec monitor.Spec) (store.Monitor, bool, error) {
	if err := spec.Normalize(); err != nil {
		return store.Monitor{}, false, err
	}
	mon, created, err := m.st.UpsertMonitor(ctx, spec)
	if err == nil && !mon.Enabled {
		m.dropPending(ctx, mon, "monitor paused")
	}
	return mon, created, err
}

// Update edits a monitor; change gets the current spec and the result is
// validated before it is stored.
func (m *Manager) Update(ctx context.Context, id int64, change func(*monitor.Spec) error) (store.Monitor, error) {
	mon, err := m.st.UpdateMonitor(ctx, id, func(s *monitor.Spec) error {
		if err := change(s); err != nil {
			return err
		}
		return s.Normalize()
	})
	if err != nil {
		return store.Monitor{}, err
	}
	if !mon.Enabled {
		m.dropPending(ctx, mon, "monitor paused")
	}
	return mon, nil
}

// SetEnabled pauses or resumes a monitor.
func (m *Manager) SetEnabled(ctx context.Context, id int64, enabled bool) (store.Monitor, error) {
	return m.Update(ctx, id, func(s *monitor.Spec) error {
		s.Enabled = enabled
		return nil
	})
}

// Delete removes a monitor, its history and its pending checks.
func (m *Manager) Delete(ctx context.Context, id int64) error {
	mon, err := m.st.GetMonitor(ctx, id)
	if err != nil {
		return err
	}
	if err := m.st.DeleteMonitor(ctx, id); err != nil {
		return err
	}
	m.dropPending(ctx, mon, "monitor deleted")
	return nil
}

// dropPending takes the monitor's pending checks off CHECKS, recording each
// slot as skipped, and tells checkers to drop one they already hold. It is
// best effort: when NATS cannot be reached the checkers and the results
// service still discard the check, so a failure here is only logged.
func (m *Manager) dropPending(ctx context.Context, mon store.Monitor, reason string) {
	if m.nc == nil {
		return
	}
	if err := m.nc.Publish(RemovedSubject, []byte(strconv.FormatInt(mon.ID, 10))); err != nil {
		m.logger.Warn("tell checkers a monitor was removed", "monitor", mon.ID, "err", err)
	}
	stream, err := m.js.Stream(ctx, queue.ChecksStream)
	if err != nil {
		m.logger.Warn("drop pending checks", "monitor", mon.ID, "err", err)
		return
	}
	for _, lane := range queue.Lanes {
		msg, err := stream.GetLastMsgForSubject(ctx, queue.CheckSubject(mon.Region, lane, mon.ID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			m.logger.Warn("drop pending checks", "monitor", mon.ID, "err", err)
			continue
		}
		var c queue.Check
		if err := json.Unmarshal(msg.Data, &c); err == nil {
			if err := m.st.RecordSkipped(ctx, mon.ID, mon.Region, c.DueAt, 1, reason); err != nil {
				m.logger.Warn("record dropped check", "monitor", mon.ID, "err", err)
			}
		}
		if err := stream.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			m.logger.Warn("drop pending check", "monitor", mon.ID, "seq", msg.Sequence, "err", err)
		}
	}
}
