package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"upwatch.dev/services/upwatch/cli"
)

// The test binary doubles as the upwatch binary: with this variable set it
// runs the command line instead of the tests, so the tests below exercise
// real processes, signals and exit statuses without a separate build.
const runAsUpwatch = "UPWATCH_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsUpwatch) == "1" {
		os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

func upwatch(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), runAsUpwatch+"=1", "DATABASE_URL=")
	return cmd
}

// freePort picks a free loopback port by listening on port 0.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// dataDir is a data directory the postgres user can enter.
func dataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "upwatch-main-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBinary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("BadConfigExitsNonZeroNamingMonitorAndField", func(t *testing.T) {
		t.Parallel()
		cfg := writeFile(t, "monitors.yaml", "monitors:\n  - name: broken\n    kind: tcp\n    target: nowhere\n    interval: 10s\n")
		var stderr bytes.Buffer
		cmd := upwatch(ctx, "up", "--config", cfg, "--data-dir", dataDir(t))
		cmd.Stderr = &stderr
		err := cmd.Run()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("exit: %v; want status 1 (stderr %q)", err, stderr.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, `"broken"`) || !strings.Contains(msg, "target: must be host:port") {
			t.Fatalf("stderr %q does not name the monitor and field", msg)
		}
	})

	t.Run("BusyPortIsOneLineAndStatus1", func(t *testing.T) {
		t.Parallel()
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		var stderr bytes.Buffer
		cmd := upwatch(ctx, "up", "--http", busy.Addr().String(), "--data-dir", dataDir(t))
		cmd.Stderr = &stderr
		_ = cmd.Run()
		msg := strings.TrimSpace(stderr.String())
		if cmd.ProcessState.ExitCode() != 1 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "--http") {
			t.Fatalf("exit %d, stderr %q; want status 1 and one line naming --http", cmd.ProcessState.ExitCode(), msg)
		}
	})

	t.Run("SIGTERMIsACleanExit", func(t *testing.T) {
		t.Parallel()
		target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		defer target.Close()
		cfg := writeFile(t, "monitors.yaml", fmt.Sprintf(
			"monitors:\n  - name: target\n    kind: http\n    target: %s/\n    interval: 1s\n", target.URL))
		httpAddr := freePort(t)
		var stdout, stderr bytes.Buffer
		cmd := upwatch(ctx, "up", "--config", cfg, "--data-dir", dataDir(t),
			"--http", httpAddr, "--nats-listen", freePort(t))
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			resp, err := http.Get("http://" + httpAddr + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case err := <-done:
				t.Fatalf("upwatch up exited during start: %v\nstderr:\n%s", err, stderr.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Logf("after kill: %v", <-done)
				t.Fatalf("upwatch up not healthy within 2m\nstderr:\n%s", stderr.String())
			}
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("after SIGTERM: %v; want exit status 0\nstderr:\n%s", err, stderr.String())
			}
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			t.Logf("after kill: %v", <-done)
			t.Fatalf("upwatch up did not stop within 1m of SIGTERM\nstderr:\n%s", stderr.String())
		}
		for _, want := range []string{"stopping ticker", "results stopped", "postgres stopped", "nats stopped"} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("log lacks %q", want)
			}
		}
		if !strings.Contains(stdout.String(), "monitors from config: 1 created") {
			t.Errorf("stdout lacks the apply summary:\n%s", stdout.String())
		}
	})
}
