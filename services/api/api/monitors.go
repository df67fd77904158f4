package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/store"
)

// Limits of the results endpoint.
const (
	defaultResultsLimit = 100
	maxResultsLimit     = 1000
)

// monitorInput is the body of POST and PATCH. Every field is a pointer so a
// PATCH can tell "not given" from "set to the zero value"; a JSON null is
// read as "not given".
type monitorInput struct {
	Name            *string  `json:"name"`
	Kind            *string  `json:"kind"`
	Target          *string  `json:"target"`
	Region          *string  `json:"region"`
	IntervalSeconds *float64 `json:"interval_seconds"`
	// TimeoutSeconds of 0 means "the default for the interval".
	TimeoutSeconds *float64 `json:"timeout_seconds"`
	// RetryIntervalSeconds of null or 0 clears the retry interval: a
	// failing monitor is then re-checked on its normal interval.
	RetryIntervalSeconds nullableSeconds `json:"retry_interval_seconds"`
	Enabled              *bool           `json:"enabled"`

	Method         *string            `json:"method"`
	ExpectedStatus *[]int             `json:"expected_status"`
	Headers        *map[string]string `json:"headers"`
	SkipTLSVerify  *bool              `json:"skip_tls_verify"`
}

// apply copies the given fields onto spec. Headers and expected_status
// replace the stored values as a whole.
func (in *monitorInput) apply(s *monitor.Spec) {
	setIf(&s.Name, in.Name)
	setIf(&s.Kind, in.Kind)
	setIf(&s.Target, in.Target)
	setIf(&s.Region, in.Region)
	setIf(&s.Enabled, in.Enabled)
	if in.IntervalSeconds != nil {
		s.Interval = seconds(*in.IntervalSeconds)
	}
	if in.TimeoutSeconds != nil {
		s.Timeout = seconds(*in.TimeoutSeconds)
	}
	if in.RetryIntervalSeconds.set {
		s.RetryInterval = seconds(in.RetryIntervalSeconds.value)
	}
	if len(in.httpFields()) == 0 {
		return
	}
	// Copy rather than edit in place: the settings may be shared with the
	// monitor as loaded, which must stay as it was if validation fails.
	h := monitor.HTTPSettings{}
	if s.Settings.HTTP != nil {
		h = *s.Settings.HTTP
	}
	setIf(&h.Method, in.Method)
	setIf(&h.ExpectedStatus, in.ExpectedStatus)
	setIf(&h.Headers, in.Headers)
	setIf(&h.SkipTLSVerify, in.SkipTLSVerify)
	s.Settings.HTTP = &h
}

// httpFields names the HTTP-only fields the input sets.
func (in *monitorInput) httpFields() []string {
	var names []string
	if in.Method != nil {
		names = append(names, "method")
	}
	if in.ExpectedStatus != nil {
		names = append(names, "expected_status")
	}
	if in.Headers != nil {
		names = append(names, "headers")
	}
	if in.SkipTLSVerify != nil {
		names = append(names, "skip_tls_verify")
	}
	return names
}

// validate normalizes the merged spec and adds what Normalize cannot see:
// HTTP settings sent for a TCP monitor would be dropped without a word, so
// they are refused instead.
func (in *monitorInput) validate(s *monitor.Spec) error {
	verr := &monitor.ValidationError{}
	if err := s.Normalize(); err != nil && !errors.As(err, &verr) {
		return fmt.Errorf("validate monitor: %w", err)
	}
	if s.Kind == monitor.KindTCP {
		for _, f := range in.httpFields() {
			verr.Fields = append(verr.Fields, monitor.FieldError{Field: f, Reason: "only applies to http monitors"})
		}
	}
	if len(verr.Fields) > 0 {
		return verr
	}
	return nil
}

// nullableSeconds is a number of seconds for which a JSON null means
// "clear it" rather than "not given", unlike the other fields.
type nullableSeconds struct {
	set   bool
	value float64 // 0 for null
}

func (n *nullableSeconds) UnmarshalJSON(b []byte) error {
	var v *float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	n.set, n.value = true, 0
	if v != nil {
		n.value = *v
	}
	return nil
}

func setIf[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// seconds converts a JSON number of seconds to a duration, clamping values
// far outside any valid range so the conversion cannot overflow; Normalize
// then refuses them.
func seconds(v float64) time.Duration {
	const limit = 1e9 // about 31 years, well past monitor.MaxInterval
	v = math.Max(-limit, math.Min(limit, v))
	return time.Duration(math.Round(v * float64(time.Second)))
}

// monitorJSON is a monitor as the API shows it.
type monitorJSON struct {
	ID              int64   `json:"id"`
	Name            string  `json:"name"`
	Kind            string  `json:"kind"`
	Target          string  `json:"target"`
	Region          string  `json:"region"`
	IntervalSeconds float64 `json:"interval_seconds"`
	TimeoutSeconds  float64 `json:"timeout_seconds"`
	// RetryIntervalSeconds is how often a failing monitor is re-checked;
	// null when it is re-checked on its normal interval.
	RetryIntervalSeconds *float64 `json:"retry_interval_seconds"`
	Enabled              bool     `json:"enabled"`

	// HTTP settings; absent for other kinds.
	Method         string            `json:"method,omitzero"`
	ExpectedStatus []int             `json:"expected_status,omitzero"`
	Headers        map[string]string `json:"headers,omitzero"`
	SkipTLSVerify  *bool             `json:"skip_tls_verify,omitzero"`

	State          string     `json:"state"`
	StateChangedAt *time.Time `json:"state_changed_at"`
	LastCheckedAt  *time.Time `json:"last_checked_at"`
	LastLatencyMS  *float64   `json:"last_latency_ms"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	// NextCheckAt is the slot the next check is for; null while paused.
	NextCheckAt *time.Time `json:"next_check_at"`
	// Lane is the lane of the next dispatch: "priority" while the monitor
	// is failing, "scheduled" otherwise.
	Lane string `json:"lane"`
	// CheckRequestedAt is when a manual check still waiting for dispatch
	// was asked for; null when none is waiting.
	CheckRequestedAt *time.Time `json:"check_requested_at"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

func toMonitorJSON(m store.Monitor) monitorJSON {
	out := monitorJSON{
		ID:               m.ID,
		Name:             m.Name,
		Kind:             m.Kind,
		Target:           m.Target,
		Region:           m.Region,
		IntervalSeconds:  m.Interval.Seconds(),
		TimeoutSeconds:   m.Timeout.Seconds(),
		Enabled:          m.Enabled,
		State:            m.State,
		StateChangedAt:   utcPtr(m.StateChangedAt),
		LastCheckedAt:    utcPtr(m.LastCheckedAt),
		LastLatencyMS:    m.LastLatencyMS,
		LastStatusCode:   m.LastStatusCode,
		LastError:        m.LastError,
		Lane:             m.Lane,
		CheckRequestedAt: utcPtr(m.CheckRequestedAt),
		CreatedAt:        m.CreatedAt.UTC(),
		UpdatedAt:        m.UpdatedAt.UTC(),
	}
	if m.RetryInterval > 0 {
		retry := m.RetryInterval.Seconds()
		out.RetryIntervalSeconds = &retry
	}
	if m.Enabled {
		due := m.DueAt.UTC()
		out.NextCheckAt = &due
	}
	if m.Kind == monitor.KindHTTP {
		h := monitor.HTTPSettings{}
		if m.Settings.HTTP != nil {
			h = *m.Settings.HTTP
		}
		out.Method = h.Method
		// Empty but present: clients see the field exists and means "any 2xx".
		out.ExpectedStatus = h.ExpectedStatus
		if out.ExpectedStatus == nil {
			out.ExpectedStatus = []int{}
		}
		out.Headers = h.Headers
		if out.Headers == nil {
			out.Headers = map[string]string{}
		}
		out.SkipTLSVerify = &h.SkipTLSVerify
	}
	return out
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// resultJSON is one check outcome as the API shows it.
type resultJSON struct {
	Status     string    `json:"status"`
	LatencyMS  float64   `json:"latency_ms"`
	StatusCode *int      `json:"status_code,omitempty"`
	Error      string    `json:"error"`
	DueAt      time.Time `json:"due_at"`
	CheckedAt  time.Time `json:"checked_at"`
	StartedAt  time.Time `json:"started_at"`
	Attempt    int       `json:"attempt"`
	Region     string    `json:"region"`
	// Manual marks the outcome of a check someone asked for.
	Manual bool `json:"manual"`
}

func toResultJSON(r store.CheckResult) resultJSON {
	status := "down"
	if r.Up {
		status = "up"
	}
	return resultJSON{
		Status:     status,
		LatencyMS:  r.LatencyMS,
		StatusCode: r.StatusCode,
		Error:      r.Error,
		DueAt:      r.DueAt.UTC(),
		CheckedAt:  r.CheckedAt.UTC(),
		StartedAt:  r.StartedAt.UTC(),
		Attempt:    r.Attempt,
		Region:     r.Region,
		Manual:     r.Manual,
	}
}

func (s *server) createMonitor(w http.ResponseWriter, r *http.Request) {
	var in monitorInput
	if !decodeBody(w, r, &in) {
		return
	}
	spec := monitor.Spec{Enabled: true}
	in.apply(&spec)
	if err := in.validate(&spec); err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	m, err := s.mgr.Create(r.Context(), spec)
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/monitors/"+strconv.FormatInt(m.ID, 10))
	writeJSON(w, http.StatusCreated, toMonitorJSON(m))
}

func (s *server) getMonitor(w http.ResponseWriter, r *http.Request) {
	id, ok := monitorID(w, r)
	if !ok {
		return
	}
	m, err := s.st.GetMonitor(r.Context(), id)
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toMonitorJSON(m))
}

// patchMonitor merges the given fields into the stored monitor and
// validates the result in the same transaction, so an invalid change
// leaves the monitor untouched.
func (s *server) patchMonitor(w http.ResponseWriter, r *http.Request) {
	id, ok := monitorID(w, r)
	if !ok {
		return
	}
	var in monitorInput
	if !decodeBody(w, r, &in) {
		return
	}
	m, err := s.mgr.Update(r.Context(), id, func(spec *monitor.Spec) error {
		in.apply(spec)
		return in.validate(spec)
	})
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toMonitorJSON(m))
}

func (s *server) deleteMonitor(w http.ResponseWriter, r *http.Request) {
	id, ok := monitorID(w, r)
	if !ok {
		return
	}
	if err := s.mgr.Delete(r.Context(), id); err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) setEnabled(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := monitorID(w, r)
		if !ok {
			return
		}
		m, err := s.mgr.SetEnabled(r.Context(), id, enabled)
		if err != nil {
			s.writeStoreError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, toMonitorJSON(m))
	}
}

func (s *server) listResults(w http.ResponseWriter, r *http.Request) {
	id, ok := monitorID(w, r)
	if !ok {
		return
	}
	limit, ok := queryLimit(w, r, defaultResultsLimit, maxResultsLimit)
	if !ok {
		return
	}
	// Look the monitor up first: an unknown id is a 404, not an empty list.
	if _, err := s.st.GetMonitor(r.Context(), id); err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	rs, err := s.st.ListResults(r.Context(), id, limit)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := make([]resultJSON, 0, len(rs))
	for _, res := range rs {
		out = append(out, toResultJSON(res))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

// queryLimit parses the ?limit parameter, def when absent. It reports
// false after writing a 400 when the value is not a whole number from 1 to
// most.
func queryLimit(w http.ResponseWriter, r *http.Request, def, most int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error:  "invalid limit",
			Fields: []monitor.FieldError{{Field: "limit", Reason: fmt.Sprintf("must be a whole number from 1 to %d", most)}},
		})
		return 0, false
	}
	return n, true
}

// decodeBody reads one JSON object into v, refusing unknown fields. It
// reports false after writing the error response.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// A second value after the object is as malformed as a broken one.
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			err = errTrailingData
		}
	}
	if err == nil {
		return true
	}

	var (
		tooBig  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		syntax  *json.SyntaxError
	)
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "request body is empty: send a JSON object")
	case errors.As(err, &typeErr) && typeErr.Field != "":
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error:  "invalid monitor",
			Fields: []monitor.FieldError{{Field: typeErr.Field, Reason: typeReason(typeErr.Type)}},
		})
	case errors.As(err, &typeErr):
		writeError(w, http.StatusBadRequest, "request body must be a JSON object")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		writeError(w, http.StatusBadRequest, "request body is not valid JSON: "+err.Error())
	case errors.Is(err, errTrailingData):
		writeError(w, http.StatusBadRequest, "request body must hold exactly one JSON object")
	default:
		if name, ok := unknownField(err); ok {
			writeJSON(w, http.StatusBadRequest, errorBody{
				Error:  "invalid monitor",
				Fields: []monitor.FieldError{{Field: name, Reason: "is not a known field"}},
			})
			return false
		}
		writeError(w, http.StatusBadRequest, "request body could not be read: "+err.Error())
	}
	return false
}

var errTrailingData = errors.New("data after the JSON object")

// unknownField extracts the field name from the decoder's unknown-field
// error, which encoding/json only gives as text.
func unknownField(err error) (string, bool) {
	rest, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	if !ok {
		return "", false
	}
	name, err := strconv.Unquote(rest)
	if err != nil {
		return rest, true
	}
	return name, true
}

// typeReason says what JSON type a Go field wants.
func typeReason(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "must be a string"
	case reflect.Bool:
		return "must be true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "must be a whole number"
	case reflect.Float32, reflect.Float64:
		return "must be a number"
	case reflect.Slice:
		return "must be an array"
	case reflect.Map, reflect.Struct:
		return "must be an object"
	default:
		return "has the wrong type"
	}
}
