package tests

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	buildOnce sync.Once
	binDir    string
	errBuild  error
)

// binaries builds the service binaries, and a nats-server, once per test
// run: the system under test as an operator deploys it.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		binDir, errBuild = os.MkdirTemp("", "upwatch-e2e-bin-")
		if errBuild != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"./services/upwatch/cmd/upwatch",
			"./services/ticker/cmd/upwatch-ticker",
			"./services/checker/cmd/upwatch-checker",
			"./services/results/cmd/upwatch-results",
			"./services/api/cmd/upwatch-api",
			"github.com/nats-io/nats-server/v2")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			errBuild = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, errBuild)
	return binDir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// process is a binary running as its own process.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *lockedWriter
	done chan error
	addr string // HTTP_ADDR, for services
}

func startProcess(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(bin), out: &lockedWriter{w: &bytes.Buffer{}}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output (last 8 KiB):\n%s", p.name, p.out.tail(8<<10))
		}
	})
	return p
}

// exited reports whether the process has ended, without waiting.
func (p *process) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
}

// terminate sends SIGTERM and waits for a clean exit.
func (p *process) terminate(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		p.done <- err
		require.NoError(t, err, "%s exit status", p.name)
	case <-time.After(within):
		t.Fatalf("%s did not stop within %s after SIGTERM", p.name, within)
	}
	return time.Since(start)
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

func (l *lockedWriter) tail(n int) string {
	s := l.String()
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
