// Package config reads the monitors file that `upwatch up --config` applies:
// a YAML list of monitors, each turned into a validated monitor.Spec, so a
// bad entry is refused before anything starts and the error names the
// monitor and the field to fix.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"upwatch.dev/shared/monitor"
)

// File is the top level of a monitors file.
type File struct {
	Monitors []Entry `yaml:"monitors"`
}

// Entry is one monitor as written in YAML. Durations may be written as Go
// durations ("30s") or as whole seconds (interval_seconds: 30), the form the
// API uses, but not both.
type Entry struct {
	Name            string   `yaml:"name"`
	Kind            string   `yaml:"kind"`
	Target          string   `yaml:"target"`
	Interval        string   `yaml:"interval"`
	IntervalSeconds *int64   `yaml:"interval_seconds"`
	Timeout         string   `yaml:"timeout"`
	TimeoutSeconds  *float64 `yaml:"timeout_seconds"`
	// RetryInterval is how often a failing monitor is re-checked; its
	// interval when not set.
	RetryInterval        string            `yaml:"retry_interval"`
	RetryIntervalSeconds *int64            `yaml:"retry_interval_seconds"`
	Region               string            `yaml:"region"`
	Enabled              *bool             `yaml:"enabled"`
	Method               string            `yaml:"method"`
	ExpectedStatus       []int             `yaml:"expected_status"`
	Headers              map[string]string `yaml:"headers"`
	SkipTLSVerify        bool              `yaml:"skip_tls_verify"`
}

// EntryError is a monitor entry that cannot be used: which entry (by
// position, line and name), which field and why.
type EntryError struct {
	Index int // 0-based position in the monitors list
	Line  int // 0 when unknown
	Name  string
	Field string
	Msg   string
}

func (e *EntryError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "monitors[%d]", e.Index)
	if e.Name != "" {
		fmt.Fprintf(&b, " %q", e.Name)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	fmt.Fprintf(&b, ": %s: %s", e.Field, e.Msg)
	return b.String()
}

// Errors lists every bad entry of a file, so all can be fixed at once.
type Errors []*EntryError

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// LoadFile reads and validates a monitors file.
func LoadFile(path string) ([]monitor.Spec, error) {
	data, err := os.ReadFile(path) //nolint:gosec // reading the file the user named is the point
	if err != nil {
		return nil, fmt.Errorf("read monitors file: %w", err)
	}
	specs, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return specs, nil
}

// Parse decodes a monitors file and returns one normalized spec per entry.
// Unknown fields are errors: a misspelt "intervall" must not silently fall
// back to a default.
func Parse(data []byte) ([]monitor.Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file: no monitors
		}
		return nil, fmt.Errorf("parse monitors file: %w", err)
	}
	lines := entryLines(data)
	var errs Errors
	specs := make([]monitor.Spec, 0, len(f.Monitors))
	seen := make(map[string]int, len(f.Monitors))
	for i, e := range f.Monitors {
		fail := func(field, msg string) {
			ee := &EntryError{Index: i, Name: strings.TrimSpace(e.Name), Field: field, Msg: msg}
			if i < len(lines) {
				ee.Line = lines[i]
			}
			errs = append(errs, ee)
		}
		spec, ok := e.spec(fail)
		if !ok {
			continue
		}
		if err := spec.Normalize(); err != nil {
			var verr *monitor.ValidationError
			if !errors.As(err, &verr) {
				fail("monitor", err.Error())
				continue
			}
			for _, fe := range verr.Fields {
				fail(e.fieldName(fe.Field), fe.Reason)
			}
			continue
		}
		if j, dup := seen[spec.Name]; dup {
			fail("name", fmt.Sprintf("%q is already used by monitors[%d]; names must be unique", spec.Name, j))
			continue
		}
		seen[spec.Name] = i
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return specs, nil
}

// spec turns the YAML form into a monitor.Spec, reporting fields that cannot
// be read. Range checks are left to monitor.Spec.Normalize, so the file, the
// CLI and the API refuse exactly the same things.
func (e Entry) spec(fail func(field, msg string)) (monitor.Spec, bool) {
	ok := true
	s := monitor.Spec{
		Name:    e.Name,
		Kind:    e.Kind,
		Target:  e.Target,
		Region:  e.Region,
		Enabled: e.Enabled == nil || *e.Enabled,
	}
	switch {
	case e.Interval != "" && e.IntervalSeconds != nil:
		fail("interval", "set interval or interval_seconds, not both")
		ok = false
	case e.Interval != "":
		d, err := time.ParseDuration(e.Interval)
		if err != nil {
			fail("interval", fmt.Sprintf("%q is not a duration (write 30s, 5m, 1h)", e.Interval))
			ok = false
		}
		s.Interval = d
	case e.IntervalSeconds != nil:
		s.Interval = wholeSeconds(*e.IntervalSeconds)
	default:
		fail("interval", "is required (for example interval: 30s)")
		ok = false
	}
	switch {
	case e.Timeout != "" && e.TimeoutSeconds != nil:
		fail("timeout", "set timeout or timeout_seconds, not both")
		ok = false
	case e.Timeout != "":
		d, err := time.ParseDuration(e.Timeout)
		if err != nil {
			fail("timeout", fmt.Sprintf("%q is not a duration (write 5s, 500ms)", e.Timeout))
			ok = false
		}
		s.Timeout = d
	case e.TimeoutSeconds != nil:
		s.Timeout = time.Duration(*e.TimeoutSeconds * float64(time.Second))
		if s.Timeout <= 0 {
			fail("timeout_seconds", "must be greater than 0")
			ok = false
		}
	}
	switch {
	case e.RetryInterval != "" && e.RetryIntervalSeconds != nil:
		fail("retry_interval", "set retry_interval or retry_interval_seconds, not both")
		ok = false
	case e.RetryInterval != "":
		d, err := time.ParseDuration(e.RetryInterval)
		if err != nil {
			fail("retry_interval", fmt.Sprintf("%q is not a duration (write 10s, 1m)", e.RetryInterval))
			ok = false
		}
		s.RetryInterval = d
	case e.RetryIntervalSeconds != nil:
		s.RetryInterval = wholeSeconds(*e.RetryIntervalSeconds)
	}
	httpOnly := e.Method != "" || len(e.ExpectedStatus) > 0 || len(e.Headers) > 0 || e.SkipTLSVerify
	if strings.EqualFold(strings.TrimSpace(e.Kind), monitor.KindHTTP) {
		s.Settings.HTTP = &monitor.HTTPSettings{
			Method:         e.Method,
			ExpectedStatus: e.ExpectedStatus,
			Headers:        e.Headers,
			SkipTLSVerify:  e.SkipTLSVerify,
		}
	} else if httpOnly {
		fail("kind", "method, expected_status, headers and skip_tls_verify apply to kind http only")
		ok = false
	}
	return s, ok
}

// wholeSeconds converts a count of seconds to a duration, clamping counts
// far outside any valid range so the conversion cannot overflow into a
// valid-looking value; Normalize then refuses them.
func wholeSeconds(n int64) time.Duration {
	const limit = 1_000_000_000 // about 31 years, well past monitor.MaxInterval
	return time.Duration(max(-limit, min(limit, n))) * time.Second
}

// fieldName maps a validation field back to the key the entry used: the
// validator speaks of interval_seconds, but a file that wrote interval: 500ms
// should be told about interval.
func (e Entry) fieldName(field string) string {
	switch {
	case field == "interval_seconds" && e.Interval != "":
		return "interval"
	case field == "timeout_seconds" && e.Timeout != "":
		return "timeout"
	case field == "retry_interval_seconds" && e.RetryInterval != "":
		return "retry_interval"
	}
	return field
}

// entryLines finds the line of each entry of the monitors list, for error
// messages. It is best effort: the typed decode has already succeeded.
func entryLines(data []byte) []int {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "monitors" || root.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		var lines []int
		for _, n := range root.Content[i+1].Content {
			lines = append(lines, n.Line)
		}
		return lines
	}
	return nil
}
