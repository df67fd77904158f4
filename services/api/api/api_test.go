package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/natstest"
	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		// Every test closes its pools, connections and servers, so nothing
		// may be left running once they are done.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testBundle is what a subtest needs besides the server under test.
type testBundle struct {
	st  *store.Store
	js  jetstream.JetStream
	reg *prometheus.Registry
}

// setup runs the handler on a fresh database and a fresh JetStream server
// with the streams in place, as upwatch-api does.
func setup(t *testing.T) (*httptest.Server, *testBundle) {
	t.Helper()
	return setupWith(t, true)
}

// setupWith is setup; withJS false builds the handler without a JetStream
// context, as an embedding that passes none would.
func setupWith(t *testing.T, withJS bool) (*httptest.Server, *testBundle) {
	t.Helper()
	st, _ := pgtest.NewStore(t)
	ns := natstest.Start(t, natstest.Options{})
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, queue.Ensure(ctx, js, queue.DefaultOptions()))

	logger := slog.New(slog.DiscardHandler)
	mgr, err := manage.New(st, nc, logger)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	// Mounted under an outer mux, as upwatch-api serves it next to /healthz
	// and /metrics.
	outer := http.NewServeMux()
	var opts []Option
	if withJS {
		opts = append(opts, WithJetStream(js))
	}
	outer.Handle("/", New(st, mgr, logger, reg, opts...))
	srv := httptest.NewServer(outer)
	t.Cleanup(srv.Close)
	return srv, &testBundle{st: st, js: js, reg: reg}
}

// call sends a request with a JSON body (a string is sent as is) and
// returns the status and the raw response body.
func call(t *testing.T, srv *httptest.Server, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(t, err)
		r = strings.NewReader(string(raw))
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, r)
	require.NoError(t, err)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, raw
}

// callJSON is call that also decodes a JSON response into out.
func callJSON(t *testing.T, srv *httptest.Server, method, path string, body, out any) int {
	t.Helper()
	code, raw := call(t, srv, method, path, body)
	require.NoError(t, json.Unmarshal(raw, out), "response body: %s", raw)
	return code
}

type apiError struct {
	Error  string `json:"error"`
	Fields []struct {
		Field  string `json:"field"`
		Reason string `json:"reason"`
	} `json:"fields"`
}

func (e apiError) fieldNames() []string {
	var names []string
	for _, f := range e.Fields {
		names = append(names, f.Field)
	}
	return names
}

func httpMonitor(name string) map[string]any {
	return map[string]any{
		"name":             name,
		"kind":             "http",
		"target":           "https://example.com/health",
		"interval_seconds": 60,
		"timeout_seconds":  2.5,
		"method":           "HEAD",
		"expected_status":  []int{200, 204},
		"headers":          map[string]string{"X-Probe": "upwatch"},
	}
}

func create(t *testing.T, srv *httptest.Server, body any) monitorJSON {
	t.Helper()
	var m monitorJSON
	code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", body, &m)
	require.Equal(t, http.StatusCreated, code)
	return m
}

func monitorPath(id int64, suffix string) string {
	return fmt.Sprintf("/api/v1/monitors/%d%s", id, suffix)
}

func TestAPI(t *testing.T) {
	t.Parallel()

	t.Run("Create", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		var raw map[string]any
		code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", httpMonitor("homepage"), &raw)
		require.Equal(t, http.StatusCreated, code)
		require.Contains(t, raw, "id")

		var m monitorJSON
		_, body := call(t, srv, http.MethodGet, fmt.Sprintf("/api/v1/monitors/%v", raw["id"]), nil)
		require.NoError(t, json.Unmarshal(body, &m))
		assert.Positive(t, m.ID)
		assert.Equal(t, "homepage", m.Name)
		assert.Equal(t, "http", m.Kind)
		assert.Equal(t, "https://example.com/health", m.Target)
		assert.Equal(t, "default", m.Region)
		assert.InDelta(t, 60, m.IntervalSeconds, 0)
		assert.InDelta(t, 2.5, m.TimeoutSeconds, 0)
		assert.True(t, m.Enabled)
		assert.Equal(t, "HEAD", m.Method)
		assert.Equal(t, []int{200, 204}, m.ExpectedStatus)
		assert.Equal(t, map[string]string{"X-Probe": "upwatch"}, m.Headers)
		require.NotNil(t, m.SkipTLSVerify)
		assert.False(t, *m.SkipTLSVerify)
		assert.Equal(t, "unknown", m.State)
		assert.Nil(t, m.LastCheckedAt)
		require.NotNil(t, m.NextCheckAt, "a new monitor is due at once")
		assert.WithinDuration(t, time.Now(), *m.NextCheckAt, time.Minute)
		assert.False(t, m.CreatedAt.IsZero())
	})

	t.Run("CreateTCPDefaults", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		var raw map[string]any
		code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", map[string]any{
			"name": "db", "kind": "tcp", "target": "db.internal:5432", "interval_seconds": 5,
			"region": "eu-west", "enabled": false,
		}, &raw)
		require.Equal(t, http.StatusCreated, code)
		assert.InDelta(t, 5, raw["timeout_seconds"], 0, "timeout defaults to the interval when shorter than 10s")
		assert.Equal(t, "eu-west", raw["region"])
		assert.Equal(t, false, raw["enabled"])
		assert.Nil(t, raw["next_check_at"], "a paused monitor has no next check")
		for _, f := range []string{"method", "expected_status", "headers", "skip_tls_verify"} {
			assert.NotContains(t, raw, f, "tcp monitors carry no http settings")
		}
	})

	t.Run("ValidationErrors", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		valid := func(change func(m map[string]any)) map[string]any {
			m := httpMonitor("api")
			change(m)
			return m
		}
		tests := []struct {
			name  string
			body  any
			field string
		}{
			{"missing name", valid(func(m map[string]any) { delete(m, "name") }), "name"},
			{"kind ftp", valid(func(m map[string]any) { m["kind"] = "ftp" }), "kind"},
			{"interval 0", valid(func(m map[string]any) { m["interval_seconds"] = 0 }), "interval_seconds"},
			{"bad url", valid(func(m map[string]any) { m["target"] = "example.com/health" }), "target"},
			{"tcp without port", map[string]any{"name": "db", "kind": "tcp", "target": "db.internal", "interval_seconds": 30}, "target"},
			{"http settings on tcp", map[string]any{"name": "db", "kind": "tcp", "target": "db:5432", "interval_seconds": 30, "method": "GET"}, "method"},
			{"unknown field", valid(func(m map[string]any) { m["intervall"] = 5 }), "intervall"},
			{"wrong type", valid(func(m map[string]any) { m["interval_seconds"] = "60" }), "interval_seconds"},
			{"bad status code", valid(func(m map[string]any) { m["expected_status"] = []int{42} }), "expected_status"},
		}
		for _, tt := range tests {
			var e apiError
			code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", tt.body, &e)
			assert.Equal(t, http.StatusBadRequest, code, tt.name)
			assert.Equal(t, "invalid monitor", e.Error, tt.name)
			assert.Contains(t, e.fieldNames(), tt.field, tt.name)
		}

		for name, body := range map[string]string{
			"empty body":    "",
			"broken json":   `{"name":`,
			"not an object": `[1, 2]`,
			"two objects":   `{} {}`,
		} {
			var e apiError
			code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", body, &e)
			assert.Equal(t, http.StatusBadRequest, code, name)
			assert.NotEmpty(t, e.Error, name)
		}

		var e apiError
		huge := `{"name":"` + strings.Repeat("x", 2<<20) + `"}`
		code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", huge, &e)
		assert.Equal(t, http.StatusRequestEntityTooLarge, code)

		ms, err := b.st.ListMonitors(t.Context())
		require.NoError(t, err)
		assert.Empty(t, ms, "no invalid monitor may be stored")
	})

	t.Run("DuplicateName", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		create(t, srv, httpMonitor("homepage"))
		var e apiError
		code := callJSON(t, srv, http.MethodPost, "/api/v1/monitors", httpMonitor("homepage"), &e)
		assert.Equal(t, http.StatusConflict, code)
		assert.Contains(t, e.Error, "already exists")
	})

	t.Run("GetAndList", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		var list struct {
			Monitors []monitorJSON `json:"monitors"`
		}
		_, raw := call(t, srv, http.MethodGet, "/api/v1/monitors", nil)
		assert.JSONEq(t, `{"monitors":[],"next_after":null}`, string(raw), "an empty list is [] rather than null")

		a := create(t, srv, httpMonitor("a"))
		b := create(t, srv, httpMonitor("b"))
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/monitors", nil, &list))
		require.Len(t, list.Monitors, 2)
		assert.Equal(t, []int64{a.ID, b.ID}, []int64{list.Monitors[0].ID, list.Monitors[1].ID})

		var got monitorJSON
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(b.ID, ""), nil, &got))
		assert.Equal(t, b, got)

		var e apiError
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodGet, monitorPath(b.ID+100, ""), nil, &e))
		assert.Equal(t, "monitor not found", e.Error)
		assert.Equal(t, http.StatusBadRequest, callJSON(t, srv, http.MethodGet, "/api/v1/monitors/abc", nil, &e))
		assert.Equal(t, http.StatusBadRequest, callJSON(t, srv, http.MethodGet, "/api/v1/monitors/0", nil, &e))
	})

	t.Run("Patch", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		orig := create(t, srv, httpMonitor("homepage"))
		create(t, srv, httpMonitor("other"))

		var patched monitorJSON
		code := callJSON(t, srv, http.MethodPatch, monitorPath(orig.ID, ""), map[string]any{
			"interval_seconds": 30, "expected_status": []int{301},
		}, &patched)
		require.Equal(t, http.StatusOK, code)
		assert.InDelta(t, 30, patched.IntervalSeconds, 0)
		assert.Equal(t, []int{301}, patched.ExpectedStatus)
		// Everything not sent stays as it was.
		want := orig
		want.IntervalSeconds, want.ExpectedStatus, want.UpdatedAt = 30, []int{301}, patched.UpdatedAt
		assert.Equal(t, want, patched)

		invalid := []struct {
			name  string
			body  any
			field string
		}{
			{"interval 0", map[string]any{"interval_seconds": 0, "name": "renamed"}, "interval_seconds"},
			{"kind ftp", map[string]any{"kind": "ftp"}, "kind"},
			{"tcp keeps url target", map[string]any{"kind": "tcp"}, "target"},
			{"unknown field", map[string]any{"state": "up"}, "state"},
			{"bad header", map[string]any{"headers": map[string]string{"bad name": "x"}}, "headers"},
		}
		for _, tt := range invalid {
			var e apiError
			code := callJSON(t, srv, http.MethodPatch, monitorPath(orig.ID, ""), tt.body, &e)
			assert.Equal(t, http.StatusBadRequest, code, tt.name)
			assert.Contains(t, e.fieldNames(), tt.field, tt.name)
		}
		var e apiError
		assert.Equal(t, http.StatusConflict, callJSON(t, srv, http.MethodPatch, monitorPath(orig.ID, ""), map[string]any{"name": "other"}, &e))
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodPatch, monitorPath(orig.ID+100, ""), map[string]any{"name": "x"}, &e))

		var after monitorJSON
		callJSON(t, srv, http.MethodGet, monitorPath(orig.ID, ""), nil, &after)
		assert.Equal(t, patched, after, "refused changes leave the monitor untouched")

		// Switching kind works when the target fits the new kind, and drops
		// the http settings.
		var tcp map[string]any
		code = callJSON(t, srv, http.MethodPatch, monitorPath(orig.ID, ""), map[string]any{"kind": "tcp", "target": "example.com:443"}, &tcp)
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, "tcp", tcp["kind"])
		assert.NotContains(t, tcp, "method")
	})

	t.Run("PauseResume", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		var got monitorJSON
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/pause"), nil, &got))
		assert.False(t, got.Enabled)
		assert.Nil(t, got.NextCheckAt)
		callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &got)
		assert.False(t, got.Enabled)

		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/resume"), nil, &got))
		assert.True(t, got.Enabled)
		assert.NotNil(t, got.NextCheckAt)

		var e apiError
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodPost, monitorPath(m.ID+100, "/pause"), nil, &e))
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		code, body := call(t, srv, http.MethodDelete, monitorPath(m.ID, ""), nil)
		assert.Equal(t, http.StatusNoContent, code)
		assert.Empty(t, body)

		var e apiError
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &e))
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodDelete, monitorPath(m.ID, ""), nil, &e))
		assert.Equal(t, "monitor not found", e.Error)
	})

	t.Run("Results", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
		var rs []queue.Result
		for i := range 3 {
			due := base.Add(time.Duration(i) * time.Minute)
			r := queue.Result{
				MonitorID: m.ID, Region: "default", DueAt: due, Attempt: 1,
				StartedAt: due.Add(10 * time.Millisecond), FinishedAt: due.Add(50 * time.Millisecond),
				Up: true, LatencyMS: float64(40 + i), StatusCode: 200,
			}
			if i == 1 {
				r.Up, r.StatusCode, r.Error = false, 0, "connection refused"
			}
			rs = append(rs, r)
		}
		stats, err := b.st.WriteResults(t.Context(), rs)
		require.NoError(t, err)
		require.Equal(t, 3, stats.Stored)

		var got struct {
			Results []map[string]any `json:"results"`
		}
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/results"), nil, &got))
		require.Len(t, got.Results, 3)
		for i, r := range got.Results {
			due, err := time.Parse(time.RFC3339, r["due_at"].(string))
			require.NoError(t, err)
			assert.True(t, due.Equal(base.Add(time.Duration(2-i)*time.Minute)), "newest first: row %d is %v", i, due)
		}
		assert.Equal(t, "up", got.Results[0]["status"])
		assert.InDelta(t, 200, got.Results[0]["status_code"], 0)
		assert.InDelta(t, 42, got.Results[0]["latency_ms"], 0)
		assert.Equal(t, "down", got.Results[1]["status"])
		assert.NotContains(t, got.Results[1], "status_code", "no status code when the check got no response")
		assert.Equal(t, "connection refused", got.Results[1]["error"])
		for _, f := range []string{"checked_at", "started_at", "attempt", "region"} {
			assert.Contains(t, got.Results[0], f)
		}

		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/results?limit=2"), nil, &got))
		assert.Len(t, got.Results, 2)

		// The monitor's state moved with the results.
		var mon monitorJSON
		callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &mon)
		assert.Equal(t, "up", mon.State)
		require.NotNil(t, mon.LastLatencyMS)
		assert.InDelta(t, 42, *mon.LastLatencyMS, 0)
	})

	t.Run("ResultsBadLimit", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		for _, limit := range []string{"0", "-1", "1001", "ten", "1.5"} {
			var e apiError
			code := callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/results?limit="+limit), nil, &e)
			assert.Equal(t, http.StatusBadRequest, code, limit)
			assert.Equal(t, []string{"limit"}, e.fieldNames(), limit)
		}
		var e apiError
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodGet, monitorPath(m.ID+100, "/results"), nil, &e))
	})

	t.Run("RoutingErrorsAreJSON", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL+"/api/v1/monitors/1", nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		assert.Equal(t, "GET, HEAD, PATCH, DELETE", resp.Header.Get("Allow"))
		var e apiError
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		assert.Equal(t, "method not allowed", e.Error)

		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodGet, "/api/v1/nothing", nil, &e))
		assert.Equal(t, "not found", e.Error)
	})

	t.Run("Dashboard", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		code, body := call(t, srv, http.MethodGet, "/", nil)
		require.Equal(t, http.StatusOK, code)
		assert.Contains(t, string(body), "No monitors yet")

		m := create(t, srv, httpMonitor("homepage <prod>"))
		_, err := b.st.WriteResults(t.Context(), []queue.Result{{
			MonitorID: m.ID, Region: "default", DueAt: time.Now().Add(-time.Second), Attempt: 1,
			StartedAt: time.Now(), FinishedAt: time.Now(), LatencyMS: 12.5, Error: "timeout",
		}})
		require.NoError(t, err)

		code, body = call(t, srv, http.MethodGet, "/", nil)
		require.Equal(t, http.StatusOK, code)
		page := string(body)
		assert.Contains(t, page, "homepage &lt;prod&gt;", "names are escaped")
		assert.Contains(t, page, `http-equiv="refresh" content="5"`)
		assert.Contains(t, page, `class="state down"`)
		assert.Contains(t, page, "12.5 ms")
		assert.Contains(t, page, fmt.Sprintf(`href="/monitors/%d"`, m.ID))

		code, body = call(t, srv, http.MethodGet, fmt.Sprintf("/monitors/%d", m.ID), nil)
		require.Equal(t, http.StatusOK, code)
		assert.Contains(t, string(body), "homepage &lt;prod&gt;")
		assert.Contains(t, string(body), "timeout")

		code, _ = call(t, srv, http.MethodGet, fmt.Sprintf("/monitors/%d", m.ID+100), nil)
		assert.Equal(t, http.StatusNotFound, code)
	})

	t.Run("Metrics", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		create(t, srv, httpMonitor("homepage"))
		call(t, srv, http.MethodGet, "/api/v1/monitors/999", nil)
		call(t, srv, http.MethodGet, "/no/such/page", nil)
		call(t, srv, http.MethodPut, "/api/v1/monitors", nil)

		families, err := b.reg.Gather()
		require.NoError(t, err)
		counts := map[string]float64{}
		var histogram bool
		for _, f := range families {
			switch f.GetName() {
			case "upwatch_api_requests_total":
				for _, m := range f.GetMetric() {
					labels := map[string]string{}
					for _, l := range m.GetLabel() {
						labels[l.GetName()] = l.GetValue()
					}
					counts[labels["route"]+" "+labels["code"]] += m.GetCounter().GetValue()
				}
			case "upwatch_api_request_duration_seconds":
				histogram = true
			}
		}
		assert.Equal(t, map[string]float64{
			"POST /api/v1/monitors 201":     1,
			"GET /api/v1/monitors/{id} 404": 1,
			"unmatched 404":                 1,
			"unmatched 405":                 1,
		}, counts)
		assert.True(t, histogram)
	})
}
