package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"upwatch.dev/shared/health"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/store"
)

// Limits of the manual-check, skipped-slot and queue-health endpoints.
const (
	maxCheckWait        = 2 * time.Minute
	checkPollInterval   = 100 * time.Millisecond
	defaultSkippedLimit = 100
	maxSkippedLimit     = 1000
	defaultHealthWindow = 5 * time.Second
	maxHealthWindow     = 30 * time.Second
	// healthGrace bounds the reads around the health sampling window, so a
	// hung NATS or database gives a 503 instead of a request that never ends.
	healthGrace = 10 * time.Second
)

// checkRequestJSON answers a manual check request that is not waited for.
type checkRequestJSON struct {
	MonitorID   int64     `json:"monitor_id"`
	RequestedAt time.Time `json:"requested_at"`
}

// checkTimeoutJSON answers a manual check whose outcome did not arrive in
// time; the check itself may still run.
type checkTimeoutJSON struct {
	Error       string    `json:"error"`
	RequestedAt time.Time `json:"requested_at"`
}

// requestCheck asks for a manual check. Without ?wait it answers 202 at
// once; with ?wait=DURATION it waits up to that long for the outcome.
func (s *server) requestCheck(w http.ResponseWriter, r *http.Request) {
	id, ok := monitorID(w, r)
	if !ok {
		return
	}
	wait, ok := queryDuration(w, r, "wait", 0, maxCheckWait)
	if !ok {
		return
	}
	requestedAt, err := s.st.RequestCheck(r.Context(), id)
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	requestedAt = requestedAt.UTC()
	if wait <= 0 {
		writeJSON(w, http.StatusAccepted, checkRequestJSON{MonitorID: id, RequestedAt: requestedAt})
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	tick := time.NewTicker(checkPollInterval)
	defer tick.Stop()
	for {
		res, err := s.st.FirstResultSince(ctx, id, requestedAt)
		switch {
		case res != nil:
			writeJSON(w, http.StatusOK, toResultJSON(*res))
			return
		case err != nil && ctx.Err() == nil:
			s.internalError(w, r, err)
			return
		}
		select {
		case <-ctx.Done():
			if r.Context().Err() != nil {
				return // the client went away: nobody to answer
			}
			writeJSON(w, http.StatusGatewayTimeout, checkTimeoutJSON{
				Error:       "no outcome within " + humanDuration(wait),
				RequestedAt: requestedAt,
			})
			return
		case <-tick.C:
		}
	}
}

// skippedJSON is a slot that was not checked, as the API shows it.
type skippedJSON struct {
	MonitorID  int64     `json:"monitor_id"`
	Region     string    `json:"region"`
	DueAt      time.Time `json:"due_at"`
	Slots      int       `json:"slots"`
	Reason     string    `json:"reason"`
	Failed     bool      `json:"failed"`
	RecordedAt time.Time `json:"recorded_at"`
}

// listSkipped lists skipped and failed slots, newest first: one monitor's
// under /monitors/{id}/skipped, every monitor's under /skipped.
// ?failed=true keeps only the failed ones.
func (s *server) listSkipped(w http.ResponseWriter, r *http.Request) {
	var id int64
	if r.PathValue("id") != "" {
		var ok bool
		if id, ok = monitorID(w, r); !ok {
			return
		}
	}
	limit, ok := queryLimit(w, r, defaultSkippedLimit, maxSkippedLimit)
	if !ok {
		return
	}
	onlyFailed := false
	if v := r.URL.Query().Get("failed"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{
				Error:  "invalid failed",
				Fields: []monitor.FieldError{{Field: "failed", Reason: "must be true or false"}},
			})
			return
		}
		onlyFailed = b
	}
	if id != 0 {
		// An unknown id is a 404, not an empty list. A deleted monitor's
		// records are still listed under /skipped.
		if _, err := s.st.GetMonitor(r.Context(), id); err != nil {
			s.writeStoreError(w, r, err)
			return
		}
	}
	slots, err := s.st.ListSkipped(r.Context(), id, onlyFailed, limit)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := make([]skippedJSON, 0, len(slots))
	for _, k := range slots {
		out = append(out, toSkippedJSON(k))
	}
	writeJSON(w, http.StatusOK, map[string]any{"skipped": out})
}

func toSkippedJSON(k store.SkippedSlot) skippedJSON {
	return skippedJSON{
		MonitorID:  k.MonitorID,
		Region:     k.Region,
		DueAt:      k.DueAt.UTC(),
		Slots:      k.Slots,
		Reason:     k.Reason,
		Failed:     k.Failed,
		RecordedAt: k.RecordedAt.UTC(),
	}
}

// healthErrorJSON answers a health request that could not be measured.
type healthErrorJSON struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

// queueHealth measures the check queue over ?window (default 2s) and
// judges it with the default thresholds. The answer is 200 whatever the
// status; 503 means it could not be measured at all.
func (s *server) queueHealth(w http.ResponseWriter, r *http.Request) {
	window, ok := queryDuration(w, r, "window", defaultHealthWindow, maxHealthWindow)
	if !ok {
		return
	}
	if s.js == nil {
		writeJSON(w, http.StatusServiceUnavailable, healthErrorJSON{
			Status: health.Unknown, Error: "the api has no NATS connection to read the queue with",
		})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), window+healthGrace)
	defer cancel()
	rep, err := health.Collect(ctx, s.js, s.st, window)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away
		}
		// The error may name hosts or tables: log it, answer in general terms.
		s.logger.Warn("queue health could not be measured", "err", err)
		msg := "the queue or the database could not be read"
		if errors.Is(err, context.DeadlineExceeded) {
			msg = "the queue or the database did not answer in time"
		}
		writeJSON(w, http.StatusServiceUnavailable, healthErrorJSON{Status: health.Unknown, Error: msg})
		return
	}
	rep.Evaluate(health.DefaultThresholds())
	// Empty lists rather than null, so clients can range over them.
	if rep.Reasons == nil {
		rep.Reasons = []string{}
	}
	if rep.Consumers == nil {
		rep.Consumers = []health.Consumer{}
	}
	writeJSON(w, http.StatusOK, rep)
}

// queryDuration parses a duration parameter ("30s", "2m"), def when
// absent. It reports false after writing a 400 when the value is not a
// duration from 0 to most.
func queryDuration(w http.ResponseWriter, r *http.Request, name string, def, most time.Duration) (time.Duration, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > most {
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error: "invalid " + name,
			Fields: []monitor.FieldError{{Field: name,
				Reason: fmt.Sprintf("must be a duration from 0s to %s, such as 5s or 1m", humanDuration(most))}},
		})
		return 0, false
	}
	return d, true
}
