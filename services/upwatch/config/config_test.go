package config

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"upwatch.dev/shared/monitor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	t.Parallel()

	t.Run("ValidFile", func(t *testing.T) {
		t.Parallel()
		specs, err := Parse([]byte(`
monitors:
  - name: api health
    kind: http
    target: http://127.0.0.1:8080/healthz
    interval: 30s
    retry_interval: 10s
    timeout: 5s
    method: head
    expected_status: [200, 204]
    headers: {X-Probe: upwatch}
  - name: nats port
    kind: tcp
    target: 127.0.0.1:4222
    interval_seconds: 15
    retry_interval_seconds: 5
    timeout_seconds: 1.5
    region: eu-west
    enabled: false
`))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(specs) != 2 {
			t.Fatalf("got %d specs, want 2", len(specs))
		}
		h := specs[0]
		if h.Name != "api health" || h.Kind != monitor.KindHTTP || h.Interval != 30*time.Second || h.RetryInterval != 10*time.Second ||
			h.Timeout != 5*time.Second || !h.Enabled || h.Region != monitor.DefaultRegion {
			t.Errorf("http spec = %+v", h)
		}
		if h.Settings.HTTP == nil || h.Settings.HTTP.Method != http.MethodHead ||
			len(h.Settings.HTTP.ExpectedStatus) != 2 || h.Settings.HTTP.Headers["X-Probe"] != "upwatch" {
			t.Errorf("http settings = %+v", h.Settings.HTTP)
		}
		tc := specs[1]
		if tc.Kind != monitor.KindTCP || tc.Interval != 15*time.Second || tc.RetryInterval != 5*time.Second ||
			tc.Timeout != 1500*time.Millisecond ||
			tc.Enabled || tc.Region != "eu-west" || tc.Settings.HTTP != nil {
			t.Errorf("tcp spec = %+v", tc)
		}
	})

	t.Run("RetryIntervalIsOptional", func(t *testing.T) {
		t.Parallel()
		specs, err := Parse([]byte(`
monitors:
  - {name: a, kind: tcp, target: "h:1", interval: 30s}
  - {name: b, kind: tcp, target: "h:1", interval: 30s, retry_interval: 0s}
`))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		for _, s := range specs {
			if s.RetryInterval != 0 {
				t.Errorf("%s: retry interval %v, want 0 (the normal interval)", s.Name, s.RetryInterval)
			}
		}
	})

	t.Run("EmptyFile", func(t *testing.T) {
		t.Parallel()
		specs, err := Parse(nil)
		if err != nil || len(specs) != 0 {
			t.Fatalf("Parse(empty) = %v, %v; want no monitors, no error", specs, err)
		}
	})

	t.Run("UnknownFieldIsAnError", func(t *testing.T) {
		t.Parallel()
		_, err := Parse([]byte(`
monitors:
  - name: typo
    kind: tcp
    target: 127.0.0.1:9
    intervall: 30s
`))
		if err == nil || !strings.Contains(err.Error(), "intervall") || !strings.Contains(err.Error(), "line 6") {
			t.Fatalf("err = %v; want an error naming the unknown field and its line", err)
		}
	})

	t.Run("InvalidMonitorNamesMonitorAndField", func(t *testing.T) {
		t.Parallel()
		_, err := Parse([]byte(`
monitors:
  - name: fine
    kind: tcp
    target: 127.0.0.1:9
    interval: 10s
  - name: bad target
    kind: tcp
    target: no-port-here
    interval: 500ms
`))
		var errs Errors
		if !errors.As(err, &errs) {
			t.Fatalf("err = %v (%T); want config.Errors", err, err)
		}
		msg := err.Error()
		for _, want := range []string{`monitors[1] "bad target" (line 7)`, "target: must be host:port", "interval: must be at least 1"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not contain %q", msg, want)
			}
		}
		if strings.Contains(msg, `"fine"`) {
			t.Errorf("error %q blames the valid monitor", msg)
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		t.Parallel()
		for name, tc := range map[string]struct{ yaml, want string }{
			"MissingInterval": {`monitors: [{name: a, kind: tcp, target: "h:1"}]`, "interval: is required"},
			"BothIntervals":   {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, interval_seconds: 5}]`, "not both"},
			"BadDuration":     {`monitors: [{name: a, kind: tcp, target: "h:1", interval: soon}]`, `interval: "soon" is not a duration`},
			"HTTPFieldOnTCP":  {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, method: GET}]`, "kind http only"},
			"DuplicateName": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s}, {name: a, kind: tcp, target: "h:2", interval: 5s}]`,
				"already used by monitors[0]"},
			"BothRetryIntervals": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, retry_interval: 5s, retry_interval_seconds: 5}]`,
				"retry_interval: set retry_interval or retry_interval_seconds, not both"},
			"BadRetryDuration": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, retry_interval: often}]`,
				`retry_interval: "often" is not a duration`},
			"ShortRetryInterval": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, retry_interval: 500ms}]`,
				"retry_interval: must be at least 1"},
			"FractionalRetryInterval": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, retry_interval: 1500ms}]`,
				"retry_interval: must be a whole number of seconds"},
			"LongRetryIntervalSeconds": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, retry_interval_seconds: 99999999999999}]`,
				"retry_interval_seconds: must be at most"},
			"NegativeRetryIntervalSeconds": {`monitors: [{name: a, kind: tcp, target: "h:1", interval: 5s, retry_interval_seconds: -1}]`,
				"retry_interval_seconds: must be at least 1"},
			"BadKind":   {`monitors: [{name: a, kind: dns, target: "h:1", interval: 5s}]`, `kind: must be http or tcp`},
			"BadStatus": {`monitors: [{name: a, kind: http, target: "http://h/", interval: 5s, expected_status: [42]}]`, "expected_status"},
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				_, err := Parse([]byte(tc.yaml))
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v; want it to contain %q", err, tc.want)
				}
			})
		}
	})

	t.Run("LoadFileNamesThePath", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "monitors.yaml")
		if err := os.WriteFile(path, []byte("monitors: [{name: x}]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadFile(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("err = %v; want it to name %s", err, path)
		}
	})
}

// The example shipped for `make run` must stay valid.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	specs, err := LoadFile(filepath.Join("..", "..", "..", "deploy", "examples", "monitors.yaml"))
	if err != nil {
		t.Fatalf("deploy/examples/monitors.yaml: %v", err)
	}
	if len(specs) < 5 {
		t.Fatalf("got %d monitors, want at least 5", len(specs))
	}
}
