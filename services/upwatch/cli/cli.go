// Package cli is the upwatch command line: one function per subcommand,
// each with its own flag.FlagSet, all reached through Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"

	"upwatch.dev/services/upwatch/up"
	"upwatch.dev/shared/service"
	"upwatch.dev/shared/store"
)

// Version is set at build time with
// -ldflags "-X upwatch.dev/services/upwatch/cli.Version=v1.2.3".
var Version = "dev"

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// env holds what a command reads from its surroundings, so tests can run
// commands in-process with their own output.
type env struct {
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"up", "run everything on this machine (embedded NATS, local PostgreSQL, all services)", runUp},
		{"migrate", "apply database migrations (DATABASE_URL)", runMigrate},
		{"monitors", "add, list and remove monitors (monitors add|list|rm)", runMonitors},
		{"check", "check a monitor now and print the outcome (check --monitor-id N)", runCheck},
		{"queue", "inspect the check queue (queue health|inspect|flush)", runQueue},
		{"version", "print the version", runVersion},
		{"help", "show this help", nil},
	}
}

// Main runs the command line and returns the process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := env{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	for _, c := range commands() {
		if c.name != name || c.run == nil {
			continue
		}
		err := c.run(ctx, e, args[1:])
		return report(stderr, name, err)
	}
	if name != "help" && name != "-h" && name != "--help" {
		fmt.Fprintf(stderr, "upwatch: unknown command %q\n\n", name)
	}
	usage(stderr)
	return exitUsage
}

// usageError is a command used the wrong way: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func report(stderr io.Writer, name string, err error) int {
	var ue usageError
	var se *up.StartError
	var es exitStatusError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &es):
		// The command has said all it had to; only the status is left.
		return int(es)
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "upwatch %s: %s\n", name, ue.msg)
		return exitUsage
	case errors.As(err, &se):
		// Already one line that says what to do: no wrapped context.
		fmt.Fprintf(stderr, "upwatch %s: %s\n", name, se.Msg)
		return exitError
	default:
		fmt.Fprintf(stderr, "upwatch %s: %v\n", name, err)
		return exitError
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "upwatch: a distributed uptime monitor")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: upwatch <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `upwatch <command> -h` for a command's flags.")
}

// newFlagSet builds a subcommand's flag set: errors are returned, not
// printed and exited on, and -h prints the usage to stderr.
func newFlagSet(e env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: upwatch %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, turning a bad flag into a usage error (flag has
// already printed the details).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{msg: err.Error()}
	}
	return nil
}

// dbFlags are the connection flags of the commands that talk to the database.
type dbFlags struct {
	databaseURL string
	natsURL     string
}

func (d *dbFlags) register(fs *flag.FlagSet, withNATS bool) {
	fs.StringVar(&d.databaseURL, "database-url", service.Env("DATABASE_URL", ""),
		"PostgreSQL connection URL (env DATABASE_URL)")
	if withNATS {
		fs.StringVar(&d.natsURL, "nats-url", service.Env("NATS_URL", "nats://127.0.0.1:4222"),
			"NATS server URL, used to take a removed monitor's pending check off the queue (env NATS_URL)")
	}
}

func (d *dbFlags) requireDB() error {
	if strings.TrimSpace(d.databaseURL) == "" {
		return usageError{msg: "no database: set DATABASE_URL or pass --database-url " +
			"(`upwatch up` prints the DATABASE_URL of its private PostgreSQL)"}
	}
	return nil
}

// open connects to the database the flags name.
func (d *dbFlags) open(ctx context.Context) (*store.Store, error) {
	if err := d.requireDB(); err != nil {
		return nil, err
	}
	return store.Open(ctx, d.databaseURL, 2)
}

func runVersion(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "version", "version")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "upwatch %s (%s %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
