package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/natstest"
	"upwatch.dev/shared/pgtest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the service binaries once per test run, as an operator
// would deploy them.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		binDir, buildErr = os.MkdirTemp("", "upwatch-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"./services/upwatch/cmd/upwatch",
			"./services/ticker/cmd/upwatch-ticker",
			"./services/checker/cmd/upwatch-checker",
			"./services/results/cmd/upwatch-results",
			"./services/api/cmd/upwatch-api")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// process is a service binary running as its own process.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func startProcess(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(bin), out: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	w := &lockedWriter{w: p.out}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("--- %s output:\n%s", p.name, w.String())
		}
	})
	return p
}

// terminate sends SIGTERM and waits for a clean exit.
func (p *process) terminate(t *testing.T, within time.Duration) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		p.done <- err
		require.NoError(t, err, "%s exit status", p.name)
	case <-time.After(within):
		t.Fatalf("%s did not stop within %s after SIGTERM", p.name, within)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url) //nolint:gosec,noctx // test URL on loopback
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

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
	resp, err := http.Post(api+"/monitors", "application/json", strings.NewReader(body)) //nolint:noctx // test
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
