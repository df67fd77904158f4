// Package monitor defines what a monitor is — the part a person writes — and
// how that input is checked, so the API, the command line and the YAML
// loader accept and refuse exactly the same things.
package monitor

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kinds of check.
const (
	KindHTTP = "http"
	KindTCP  = "tcp"
)

// DefaultRegion is where a monitor is checked from when none is named.
const DefaultRegion = "default"

// Limits on what a monitor may ask for.
const (
	MaxTimeout      = 120 * time.Second
	MaxInterval     = 7 * 24 * time.Hour
	defaultTimeout  = 10 * time.Second
	maxNameLength   = 200
	maxTargetLength = 2048
)

// HTTPSettings are the per-kind settings of an HTTP(S) monitor.
type HTTPSettings struct {
	// Method is the request method; GET when empty.
	Method string `json:"method,omitempty" yaml:"method,omitempty"`
	// ExpectedStatus lists the status codes that mean "up"; any 2xx when empty.
	ExpectedStatus []int `json:"expected_status,omitempty" yaml:"expected_status,omitempty"`
	// Headers are sent with every request.
	Headers map[string]string `json:"headers,omitempty" yaml:"headers,omitempty"`
	// SkipTLSVerify accepts any certificate (for self-signed endpoints).
	SkipTLSVerify bool `json:"skip_tls_verify,omitempty" yaml:"skip_tls_verify,omitempty"`
}

// Settings holds the per-kind settings; only the block for the monitor's
// kind is used.
type Settings struct {
	HTTP *HTTPSettings `json:"http,omitempty"`
}

// Spec is a monitor as a person defines it.
type Spec struct {
	Name     string
	Kind     string
	Target   string
	Region   string
	Interval time.Duration
	Timeout  time.Duration
	// RetryInterval is how often a failing monitor is re-checked; its
	// normal interval when zero.
	RetryInterval time.Duration
	Enabled       bool
	Settings      Settings
}

// FieldError names the input field that is wrong and why.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ValidationError lists every field that is wrong, so a person can fix all
// of them at once.
type ValidationError struct {
	Fields []FieldError `json:"fields"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, 0, len(e.Fields))
	for _, f := range e.Fields {
		parts = append(parts, f.Field+": "+f.Reason)
	}
	return "invalid monitor: " + strings.Join(parts, "; ")
}

func (e *ValidationError) add(field, reason string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Reason: fmt.Sprintf(reason, args...)})
}

// Normalize fills defaults (region, timeout, HTTP method) and validates the
// spec. It returns a *ValidationError naming every bad field.
func (s *Spec) Normalize() error {
	var verr ValidationError
	s.Name = strings.TrimSpace(s.Name)
	s.Target = strings.TrimSpace(s.Target)
	s.Kind = strings.ToLower(strings.TrimSpace(s.Kind))
	if s.Region == "" {
		s.Region = DefaultRegion
	}
	switch {
	case s.Name == "":
		verr.add("name", "is required")
	case len(s.Name) > maxNameLength:
		verr.add("name", "must be at most %d characters", maxNameLength)
	}
	if !validToken(s.Region) {
		verr.add("region", "must be letters, digits, '-' or '_'")
	}
	switch {
	case s.Interval < time.Second:
		verr.add("interval_seconds", "must be at least 1")
	case s.Interval > MaxInterval:
		verr.add("interval_seconds", "must be at most %d", int(MaxInterval/time.Second))
	case s.Interval%time.Second != 0:
		verr.add("interval_seconds", "must be a whole number of seconds")
	}
	switch {
	case s.RetryInterval == 0:
	case s.RetryInterval < time.Second:
		verr.add("retry_interval_seconds", "must be at least 1")
	case s.RetryInterval > MaxInterval:
		verr.add("retry_interval_seconds", "must be at most %d", int(MaxInterval/time.Second))
	case s.RetryInterval%time.Second != 0:
		verr.add("retry_interval_seconds", "must be a whole number of seconds")
	}
	if s.Timeout == 0 {
		s.Timeout = min(defaultTimeout, max(s.Interval, time.Second))
	}
	switch {
	case s.Timeout < time.Millisecond:
		verr.add("timeout_seconds", "must be greater than 0")
	case s.Timeout > MaxTimeout:
		verr.add("timeout_seconds", "must be at most %d", int(MaxTimeout/time.Second))
	}
	switch s.Kind {
	case KindHTTP:
		s.normalizeHTTP(&verr)
	case KindTCP:
		s.Settings.HTTP = nil
		if reason := checkHostPort(s.Target); reason != "" {
			verr.add("target", "%s", reason)
		}
	case "":
		verr.add("kind", "is required (http or tcp)")
	default:
		verr.add("kind", "must be http or tcp, not %q", s.Kind)
	}
	if len(s.Target) > maxTargetLength {
		verr.add("target", "must be at most %d characters", maxTargetLength)
	}
	if len(verr.Fields) > 0 {
		return &verr
	}
	return nil
}

func (s *Spec) normalizeHTTP(verr *ValidationError) {
	u, err := url.Parse(s.Target)
	switch {
	case s.Target == "":
		verr.add("target", "is required (a URL such as https://example.com/health)")
	case err != nil:
		verr.add("target", "is not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		verr.add("target", "must start with http:// or https://")
	case u.Host == "":
		verr.add("target", "must name a host")
	}
	if s.Settings.HTTP == nil {
		s.Settings.HTTP = &HTTPSettings{}
	}
	h := s.Settings.HTTP
	h.Method = strings.ToUpper(strings.TrimSpace(h.Method))
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	switch h.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		verr.add("method", "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
	}
	for _, code := range h.ExpectedStatus {
		if code < 100 || code > 599 {
			verr.add("expected_status", "%d is not an HTTP status code (100-599)", code)
		}
	}
	for k := range h.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") {
			verr.add("headers", "%q is not a valid header name", k)
		}
	}
}

// StatusExpected reports whether an HTTP status code means "up".
func (h *HTTPSettings) StatusExpected(code int) bool {
	if h == nil || len(h.ExpectedStatus) == 0 {
		return code >= 200 && code <= 299
	}
	for _, c := range h.ExpectedStatus {
		if c == code {
			return true
		}
	}
	return false
}

func checkHostPort(target string) string {
	if target == "" {
		return "is required (host:port)"
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return "must be host:port"
	}
	if host == "" {
		return "must name a host"
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "port must be a number from 1 to 65535"
	}
	return ""
}

// validToken reports whether s can be one token of a NATS subject and of a
// consumer name.
func validToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// ValidRegion reports whether a region name is usable in subjects and
// consumer names.
func ValidRegion(s string) bool { return validToken(s) }
