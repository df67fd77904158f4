// Package api serves upwatch's JSON REST API under /api/v1 and a small
// server-rendered dashboard. Reads go straight to the store; every write
// goes through manage.Manager so the queue stays consistent with the
// monitors table.
package api

import (
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/store"
)

// maxBodyBytes caps request bodies: a monitor is a few hundred bytes, and
// an unbounded body would let one client hold memory.
const maxBodyBytes = 1 << 20

// unmatchedRoute labels requests no pattern matched, so stray paths do not
// create a metric series each.
const unmatchedRoute = "unmatched"

type server struct {
	st     *store.Store
	mgr    *manage.Manager
	logger *slog.Logger
	mux    *http.ServeMux
	pages  *template.Template
	// js reads the check queue for the health endpoint; nil when the API
	// was built without one, and the endpoint then answers 503.
	js jetstream.JetStream

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// Option changes how New builds the handler.
type Option func(*server)

// WithJetStream gives the API a JetStream context to read the check queue
// with, for GET /api/v1/queue/health. Without it that endpoint answers 503.
func WithJetStream(js jetstream.JetStream) Option {
	return func(s *server) { s.js = js }
}

// New builds the API and dashboard handler. Metrics are registered on reg;
// a nil reg leaves them unregistered.
func New(st *store.Store, mgr *manage.Manager, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) http.Handler {
	factory := promauto.With(reg)
	s := &server{
		st:     st,
		mgr:    mgr,
		logger: logger.With("component", "api"),
		mux:    http.NewServeMux(),
		pages:  parsePages(),
		requests: factory.NewCounterVec(prometheus.CounterOpts{
			Name: "upwatch_api_requests_total",
			Help: "HTTP requests served, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: factory.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "upwatch_api_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}, []string{"route"}),
	}
	for _, opt := range opts {
		opt(s)
	}

	s.mux.HandleFunc("POST /api/v1/monitors", s.createMonitor)
	s.mux.HandleFunc("GET /api/v1/monitors", s.listMonitors)
	s.mux.HandleFunc("GET /api/v1/monitors/{id}", s.getMonitor)
	s.mux.HandleFunc("PATCH /api/v1/monitors/{id}", s.patchMonitor)
	s.mux.HandleFunc("DELETE /api/v1/monitors/{id}", s.deleteMonitor)
	s.mux.HandleFunc("POST /api/v1/monitors/{id}/pause", s.setEnabled(false))
	s.mux.HandleFunc("POST /api/v1/monitors/{id}/resume", s.setEnabled(true))
	s.mux.HandleFunc("GET /api/v1/monitors/{id}/results", s.listResults)
	s.mux.HandleFunc("GET /api/v1/monitors/{id}/uptime", s.monitorUptime)
	s.mux.HandleFunc("POST /api/v1/monitors/{id}/check", s.requestCheck)
	s.mux.HandleFunc("GET /api/v1/monitors/{id}/skipped", s.listSkipped)
	s.mux.HandleFunc("GET /api/v1/skipped", s.listSkipped)
	s.mux.HandleFunc("GET /api/v1/queue/health", s.queueHealth)

	s.mux.HandleFunc("GET /{$}", s.dashboard)
	s.mux.HandleFunc("GET /monitors/{id}", s.monitorPage)
	s.mux.HandleFunc("POST /monitors/{id}/check", s.checkFromPage)
	return s
}

// ServeHTTP routes the request and records its metrics. Requests under
// /api/ that match no route get JSON 404 and 405 answers instead of the
// mux's plain-text ones, so API clients can always parse the body.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	// Label by the matched pattern, not the path: patterns are a fixed set,
	// paths are whatever clients send. r.Pattern cannot be used, as a mux
	// this handler is mounted under may already have set it.
	_, route := s.mux.Handler(r)
	if route == "" && strings.HasPrefix(r.URL.Path, "/api/") {
		s.apiNoRoute(rec, r)
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	if route == "" {
		route = unmatchedRoute
	}
	s.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	s.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// apiNoRoute answers 405 with an Allow header when the path exists for
// other methods, and 404 otherwise.
func (s *server) apiNoRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code = code
		r.wroteHeader = true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// errorBody is the shape of every API error.
type errorBody struct {
	Error  string               `json:"error"`
	Fields []monitor.FieldError `json:"fields,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only a programming error (an unsupported type) gets here; the
		// response values are plain structs.
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// writeStoreError maps errors from the store and the manager to responses.
// Anything unexpected is logged and hidden behind a 500: its text may name
// tables or hosts.
func (s *server) writeStoreError(w http.ResponseWriter, r *http.Request, err error) {
	var verr *monitor.ValidationError
	switch {
	case errors.As(err, &verr):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid monitor", Fields: verr.Fields})
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "monitor not found")
	case errors.Is(err, store.ErrPaused):
		writeError(w, http.StatusConflict, "monitor is paused")
	case errors.Is(err, store.ErrNameTaken):
		writeJSON(w, http.StatusConflict, errorBody{
			Error:  "a monitor with that name already exists",
			Fields: []monitor.FieldError{{Field: "name", Reason: "is already taken"}},
		})
	default:
		s.internalError(w, r, err)
	}
}

func (s *server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

// monitorID parses the {id} path value. It reports false after writing a
// 400 when the value is not a positive integer.
func monitorID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error:  "invalid monitor id",
			Fields: []monitor.FieldError{{Field: "id", Reason: "must be a positive integer"}},
		})
		return 0, false
	}
	return id, true
}
