// Package localpg runs a private PostgreSQL server from the system's
// binaries in a directory of upwatch's own: for `upwatch up` on one machine
// and for tests that need a real database.
package localpg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries means PostgreSQL's server programs were not found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: " +
	"install them (Debian: apt-get install postgresql) or set PG_BIN_DIR, or set DATABASE_URL to use a running server")

// FindBinDir finds the directory holding initdb and postgres: $PG_BIN_DIR,
// then $PATH, then the newest /usr/lib/postgresql/*/bin (where Debian puts
// them, off the PATH).
func FindBinDir() (string, error) {
	if d := os.Getenv("PG_BIN_DIR"); d != "" {
		if hasServer(d) {
			return d, nil
		}
		return "", fmt.Errorf("PG_BIN_DIR=%s: %w", d, ErrNoBinaries)
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && hasServer(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if hasServer(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if hasServer(d) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		//nolint:gosec // dir is the operator's PG_BIN_DIR or a known system directory
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// Options configure a local server.
type Options struct {
	// Dir holds the data directory and the server's log.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 listens on a Unix socket only.
	Port int
	// Database is created when missing; "upwatch" when empty.
	Database string
	// Durable keeps fsync on. Tests turn it off for speed; upwatch up keeps it.
	Durable bool
	// Log receives the server's output; a file in Dir when nil.
	Log io.Writer
}

// Server is a running PostgreSQL.
type Server struct {
	opts    Options
	cmd     *exec.Cmd
	sockDir string
	done    chan struct{}
	err     error
}

const superuser = "upwatch"

// Start initializes the data directory on first use and starts the server,
// returning once it accepts connections and the database exists. As root it
// runs the server as the postgres user, because PostgreSQL refuses to run as
// root.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Database == "" {
		opts.Database = "upwatch"
	}
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	opts.Dir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, done: make(chan struct{})}
	s.sockDir = filepath.Join(dir, "run")
	if len(s.sockDir) > 80 { // a Unix socket path must fit in 107 bytes
		sum := sha256.Sum256([]byte(dir))
		s.sockDir = filepath.Join(os.TempDir(), "upwatch-pg-"+hex.EncodeToString(sum[:6]))
	}
	dataDir := filepath.Join(dir, "data")
	for _, d := range []string{dataDir, s.sockDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if cred != nil {
		for _, d := range []string{dir, dataDir, s.sockDir} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("hand %s to the postgres user: %w", d, err)
			}
		}
		if err := reachable(dir, cred); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		//nolint:gosec // runs the system's initdb, found by FindBinDir
		init := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), "-D", dataDir, "-U", superuser,
			"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
		init.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		init.Dir = dir
		if out, err := init.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb %s: %w: %s", dataDir, err, strings.TrimSpace(string(out)))
		}
	}

	listen := ""
	port := opts.Port
	if port > 0 {
		listen = "127.0.0.1"
	} else {
		port = 5432
	}
	args := []string{"-D", dataDir, "-k", s.sockDir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=" + listen, "-c", "max_connections=200"}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	// The server outlives the start context; Stop and Kill end it.
	s.cmd = exec.Command(filepath.Join(binDir, "postgres"), args...) //nolint:gosec,noctx // the system's postgres, found by FindBinDir
	// The server dies with us: a killed upwatch must not leave a server
	// holding the data directory.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGTERM, Setpgid: true}
	logw := opts.Log
	if logw == nil {
		logPath := filepath.Join(dir, "postgres.log")
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // our own data directory
		if err != nil {
			return nil, fmt.Errorf("open server log: %w", err)
		}
		defer f.Close() // the child keeps its own descriptor
		logw = f
	}
	s.cmd.Stdout, s.cmd.Stderr = logw, logw
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.createDatabase(ctx, opts.Database); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// runAs returns the credentials to run PostgreSQL with: nil for a normal
// user, the postgres user's when running as root.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres user, but it does not exist " +
			"(install PostgreSQL's package, which creates it, or run as a normal user)")
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// reachable checks that the postgres user can enter every parent of dir;
// a data directory under /root, say, is not.
func reachable(dir string, cred *syscall.Credential) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("check %s: %w", d, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		if ok {
			canEnter := mode&0o001 != 0 ||
				(sys.Uid == cred.Uid && mode&0o100 != 0) || (sys.Gid == cred.Gid && mode&0o010 != 0)
			if !canEnter {
				return fmt.Errorf("the postgres user cannot enter %s (mode %v): choose a data directory it can reach, "+
					"for example under /var/lib or /tmp", d, mode)
			}
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited during start (%w); see %s", s.err,
				filepath.Join(s.opts.Dir, "postgres.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		lastErr = err
	}
	return fmt.Errorf("postgres did not accept connections within 60s: %w", lastErr)
}

func (s *Server) createDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// URL is a connection string for a database on this server.
func (s *Server) URL(database string) string {
	q := url.Values{}
	if s.opts.Port > 0 {
		return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, s.opts.Port, database)
	}
	q.Set("host", s.sockDir)
	q.Set("port", "5432")
	return "postgres://" + superuser + "@/" + database + "?" + q.Encode()
}

// Done is closed when the server has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is the server's exit status, once Done is closed.
func (s *Server) Err() error { return s.err }

// Stop shuts the server down with a fast shutdown (SIGINT: roll back open
// transactions, checkpoint), and kills it if it has not stopped in 30 s.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Kill stops the server without a clean shutdown, as a crash would.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}
