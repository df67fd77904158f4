package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/natstest"
	"upwatch.dev/shared/pgtest"
)

func TestServicesAsSeparateProcesses(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	ns := natstest.Start(t, natstest.Options{})
	dbURL := pgtest.NewDB(t)
	tg := newTarget(t, nil)
	env := []string{"NATS_URL=" + ns.ClientURL(), "DATABASE_URL=" + dbURL, "REGION=default", "LOG_FORMAT=json"}

	out, err := exec.Command(filepath.Join(bin, "upwatch"), "migrate", "--database-url", dbURL).CombinedOutput()
	require.NoError(t, err, "upwatch migrate: %s", out)

	addrs := map[string]string{}
	procs := map[string]*process{}
	for _, name := range []string{"upwatch-results", "upwatch-checker", "upwatch-ticker", "upwatch-api"} {
		addrs[name] = freeAddr(t)
		extra := []string{"HTTP_ADDR=" + addrs[name]}
		if name == "upwatch-ticker" {
			extra = append(extra, "TICK=200ms")
		}
		procs[name] = startProcess(t, filepath.Join(bin, name), append(env, extra...))
	}
	for name, addr := range addrs {
		eventually(t, 30*time.Second, name+" healthy", func() bool {
			code, _ := httpGet("http://" + addr + "/healthz")
			return code == http.StatusOK
		})
	}

	api := "http://" + addrs["upwatch-api"] + "/api/v1"
	body := fmt.Sprintf(`{"name":"e2e","kind":"http","target":%q,"interval_seconds":2,"timeout_seconds":1}`, tg.url("/e2e"))
	resp, err := http.Post(api+"/monitors", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	var created struct {
		ID int64 `json:"id"`
	}
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()
	require.Positive(t, created.ID)

	type result struct {
		Status    string  `json:"status"`
		LatencyMS float64 `json:"latency_ms"`
		DueAt     string  `json:"due_at"`
		CheckedAt string  `json:"checked_at"`
	}
	var got struct {
		Results []result `json:"results"`
	}
	eventually(t, 30*time.Second, "two results through the API", func() bool {
		code, b := httpGet(fmt.Sprintf("%s/monitors/%d/results?limit=10", api, created.ID))
		return code == http.StatusOK && json.Unmarshal([]byte(b), &got) == nil && len(got.Results) >= 2
	})
	require.Equal(t, "up", got.Results[0].Status)
	newer, err := time.Parse(time.RFC3339Nano, got.Results[0].DueAt)
	require.NoError(t, err)
	older, err := time.Parse(time.RFC3339Nano, got.Results[1].DueAt)
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, newer.Sub(older), "consecutive slots one interval apart, newest first")

	_, metrics := httpGet("http://" + addrs["upwatch-checker"] + "/metrics")
	require.Contains(t, metrics, `upwatch_checker_checks_total{outcome="up"}`)
	_, metrics = httpGet("http://" + addrs["upwatch-ticker"] + "/metrics")
	require.Contains(t, metrics, `upwatch_ticker_dispatches_total{outcome="published"}`)

	// A clean stop, in the order an operator would drain a deployment.
	for _, name := range []string{"upwatch-ticker", "upwatch-checker", "upwatch-results", "upwatch-api"} {
		procs[name].terminate(t, 30*time.Second)
	}

}
