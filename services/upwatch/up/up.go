// Package up runs the whole of upwatch in one process on one machine: an
// embedded NATS server, a private PostgreSQL (unless DATABASE_URL names
// one), and the ticker, checker, results and API services, all in one
// oklog/run group. It is what `upwatch up` does.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"upwatch.dev/services/api/api"
	"upwatch.dev/services/checker/checker"
	"upwatch.dev/services/results/results"
	"upwatch.dev/services/ticker/ticker"
	"upwatch.dev/shared/localpg"
	"upwatch.dev/shared/manage"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/service"
	"upwatch.dev/shared/store"
)

// Options configure a run.
type Options struct {
	// DataDir holds NATS's JetStream files (DataDir/nats) and the private
	// PostgreSQL (DataDir/postgres), so a restart finds the same data.
	DataDir string
	// Monitors are applied (created or updated by name) before the services start.
	Monitors []monitor.Spec
	// HTTPAddr serves the API, the dashboard, /healthz and /metrics; port 0 picks one.
	HTTPAddr string
	// NATSListen is where the embedded NATS server accepts clients; port 0 picks one.
	NATSListen string
	// Region is the region the ticker and checker serve.
	Region string
	// DatabaseURL, when set, is used instead of a private PostgreSQL.
	DatabaseURL string
	// Out receives the start-up summary: where to look.
	Out io.Writer
	// Logger is the process's one logger.
	Logger *slog.Logger
	// Ready, when set, is called once everything runs (tests use it to learn
	// the addresses picked for port 0).
	Ready func(Addrs)
}

// Addrs are where a running upwatch can be reached.
type Addrs struct {
	HTTP        string // host:port of the API, dashboard, /healthz and /metrics
	NATSURL     string
	DatabaseURL string
}

// StartError is a failure to start that the user can fix, with a one-line
// message saying how. The command line prints it alone, without a stack of
// wrapped context.
type StartError struct {
	Msg string
	Err error
}

func (e *StartError) Error() string { return e.Msg }
func (e *StartError) Unwrap() error { return e.Err }

// Run starts everything, serves until ctx is cancelled or SIGINT/SIGTERM
// arrives, then stops the services first and NATS and PostgreSQL last. A
// signal or a cancelled ctx is a clean stop and returns nil.
func Run(ctx context.Context, o Options) (err error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	if o.Region == "" {
		o.Region = monitor.DefaultRegion
	}
	if !monitor.ValidRegion(o.Region) {
		return &StartError{Msg: fmt.Sprintf("region %q: use letters, digits, '-' or '_'", o.Region)}
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	// 0755: as root, PostgreSQL runs as the postgres user and must be able
	// to enter this directory to reach its own below it.
	if err := os.MkdirAll(dataDir, 0o755); err != nil { //nolint:gosec // the postgres user must be able to enter it
		return fmt.Errorf("create data directory: %w", err)
	}

	// Bind the HTTP port before anything slow starts, so a busy port is
	// reported at once.
	var lc net.ListenConfig
	httpLn, err := lc.Listen(ctx, "tcp", o.HTTPAddr)
	if err != nil {
		return busyPort("HTTP", o.HTTPAddr, "--http", err)
	}
	defer func() {
		if err != nil {
			_ = httpLn.Close()
		}
	}()

	// NATS first: it is quick, and PostgreSQL would otherwise be started
	// only to be stopped again because the NATS port is taken.
	ns, err := startNATS(ctx, dataDir, o.NATSListen, logger.With("component", "nats"))
	if err != nil {
		return err
	}
	defer func() {
		logger.Info("stopping nats")
		ns.Shutdown()
		ns.WaitForShutdown()
		logger.Info("nats stopped")
	}()

	databaseURL := o.DatabaseURL
	var pg *localpg.Server
	if databaseURL == "" {
		logger.Info("starting postgres", "dir", filepath.Join(dataDir, "postgres"))
		pg, err = localpg.Start(ctx, localpg.Options{Dir: filepath.Join(dataDir, "postgres"), Durable: true})
		if errors.Is(err, localpg.ErrNoBinaries) {
			return &StartError{Err: err, Msg: "PostgreSQL is not installed: run `make setup` " +
				"(or `apt-get install postgresql`), or set DATABASE_URL to a running server"}
		}
		if err != nil {
			return fmt.Errorf("start postgres: %w", err)
		}
		defer func() {
			logger.Info("stopping postgres")
			pg.Stop()
			logger.Info("postgres stopped")
		}()
		databaseURL = pg.URL("upwatch")
	}

	st, err := store.Open(ctx, databaseURL, 20)
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := st.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	if len(applied) > 0 {
		logger.Info("applied migrations", "versions", applied)
	}

	// One connection per service, named, so `nats server report
	// connections` shows who is who and a slow consumer stalls only itself.
	conns := map[string]*nats.Conn{}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (*nats.Conn, jetstream.JetStream, error) {
		nc, err := service.ConnectNATS(ns.ClientURL(), "upwatch-"+name, logger.With("component", name),
			nats.InProcessServer(ns))
		if err != nil {
			return nil, nil, err
		}
		conns[name] = nc
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, nil, fmt.Errorf("jetstream for %s: %w", name, err)
		}
		return nc, js, nil
	}
	mgrNC, mgrJS, err := connect("api")
	if err != nil {
		return err
	}
	if err := queue.Ensure(ctx, mgrJS, queue.DefaultOptions()); err != nil {
		return fmt.Errorf("create streams: %w", err)
	}
	mgr, err := manage.New(st, mgrNC, logger.With("component", "manage"))
	if err != nil {
		return fmt.Errorf("monitor manager: %w", err)
	}
	if err := applyMonitors(ctx, mgr, o.Monitors, out); err != nil {
		return err
	}
	for _, spec := range o.Monitors {
		if spec.Region != o.Region {
			// Only this region's ticker and checker run here.
			logger.Warn("monitor is in another region and will not be checked by this upwatch up",
				"monitor", spec.Name, "region", spec.Region, "serving", o.Region)
		}
	}

	tickerNC, tickerJS, err := connect("ticker")
	if err != nil {
		return err
	}
	checkerNC, checkerJS, err := connect("checker")
	if err != nil {
		return err
	}
	_, resultsJS, err := connect("results")
	if err != nil {
		return err
	}

	reg := service.NewRegistry()
	// Each service registers on its own view of the one registry, labelled
	// with its name, so the same metric from two services cannot collide.
	regFor := func(name string) prometheus.Registerer {
		return prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, reg)
	}

	tcfg := ticker.DefaultConfig()
	tcfg.Region = o.Region
	tk := ticker.New(tcfg, st, tickerJS, logger.With("component", "ticker"), regFor("ticker"))

	ccfg := checker.DefaultConfig()
	ccfg.Region = o.Region
	ck := checker.New(ccfg, checkerNC, checkerJS, logger.With("component", "checker"), regFor("checker"))

	rs := results.New(results.DefaultConfig(), st, resultsJS, logger.With("component", "results"), regFor("results"))

	health := map[string]service.HealthCheck{
		"nats":     service.NATSHealth(tickerNC),
		"postgres": st.Ping,
	}
	admin := service.AdminHandler(reg, health)
	mux := http.NewServeMux()
	mux.Handle("/healthz", admin)
	mux.Handle("/metrics", admin)
	mux.Handle("/", api.New(st, mgr, logger, regFor("api"), api.WithJetStream(mgrJS))) // api adds its own component
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	addrs := Addrs{HTTP: httpLn.Addr().String(), NATSURL: ns.ClientURL(), DatabaseURL: databaseURL}
	printWhereToLook(out, addrs, pg != nil)

	var g run.Group
	// Signals: SIGINT (Ctrl-C) or SIGTERM stop everything cleanly.
	{
		g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	}
	// Each service gets its own context, detached from ctx's cancellation
	// (keeping its values): the group, not the caller, decides when each
	// one stops, so they all stop through the same interrupt path.

	// Ticker: claims due monitors and publishes their checks.
	{
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error {
			defer logger.Info("ticker stopped")
			return quiet(tk.Run(ctx), "ticker")
		}, func(error) {
			logger.Info("stopping ticker")
			cancel()
		})
	}
	// Checker: runs due checks and publishes their outcomes.
	{
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error {
			defer logger.Info("checker stopped")
			return quiet(ck.Run(ctx), "checker")
		}, func(error) {
			logger.Info("stopping checker")
			cancel()
		})
	}
	// Results: stores outcomes, moves monitor state and schedules the next check.
	{
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error {
			defer logger.Info("results stopped")
			return quiet(rs.Run(ctx), "results")
		}, func(error) {
			logger.Info("stopping results")
			cancel()
		})
	}
	// API: REST, dashboard, /healthz and /metrics on one listener.
	{
		g.Add(func() error {
			logger.Info("api started", "addr", addrs.HTTP)
			defer logger.Info("api stopped")
			if err := httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server on %s: %w", addrs.HTTP, err)
			}
			return nil
		}, func(error) {
			logger.Info("stopping api")
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = httpSrv.Shutdown(ctx)
		})
	}
	// Dependencies: stop everything if PostgreSQL or NATS dies under us.
	// They are themselves stopped by the deferred calls above, after the
	// whole group has returned, so no service loses them while stopping.
	{
		stop := make(chan struct{})
		natsDown := make(chan struct{})
		go func() {
			ns.WaitForShutdown()
			close(natsDown)
		}()
		var pgDone <-chan struct{}
		if pg != nil {
			pgDone = pg.Done()
		}
		g.Add(func() error {
			select {
			case <-pgDone:
				exitErr := pg.Err()
				if exitErr == nil {
					exitErr = errors.New("exit status 0")
				}
				return fmt.Errorf("postgres exited unexpectedly (%w); see %s", exitErr,
					filepath.Join(dataDir, "postgres", "postgres.log"))
			case <-natsDown:
				return errors.New("nats server stopped unexpectedly")
			case <-stop:
				return nil
			}
		}, func(error) {
			close(stop)
		})
	}
	if o.Ready != nil {
		o.Ready(addrs)
	}
	err = g.Run()
	if errors.Is(err, run.ErrSignal) {
		logger.Info("stopped", "reason", err.Error())
		return nil
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		logger.Info("stopped", "reason", "context cancelled")
		return nil
	}
	return err
}

// quiet turns a service's return on cancellation into a clean stop.
func quiet(err error, name string) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// applyMonitors creates or updates the monitors of the config file, by name.
func applyMonitors(ctx context.Context, mgr *manage.Manager, specs []monitor.Spec, out io.Writer) error {
	if len(specs) == 0 {
		return nil
	}
	var created, updated int
	for _, spec := range specs {
		_, isNew, err := mgr.Apply(ctx, spec)
		if err != nil {
			return fmt.Errorf("apply monitor %q: %w", spec.Name, err)
		}
		if isNew {
			created++
		} else {
			updated++
		}
	}
	fmt.Fprintf(out, "monitors from config: %d created, %d updated\n", created, updated)
	return nil
}

// startNATS runs the embedded NATS server with JetStream files under
// dataDir/nats, on the address the nats CLI will be pointed at.
func startNATS(ctx context.Context, dataDir, listen string, logger *slog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, &StartError{Err: err, Msg: fmt.Sprintf("--nats-listen %q: want host:port", listen)}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, &StartError{Err: err, Msg: fmt.Sprintf("--nats-listen %q: bad port", listen)}
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// The server reports a busy port only in its log; probing first
		// gives a message that says what to do.
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", listen)
		if err != nil {
			return nil, busyPort("NATS", listen, "--nats-listen", err)
		}
		_ = ln.Close()
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "upwatch",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "nats"),
		NoSigs:     true, // signals are the run group's
	})
	if err != nil {
		return nil, fmt.Errorf("configure nats server: %w", err)
	}
	ns.SetLoggerV2(natsLogger{logger}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, &StartError{Msg: fmt.Sprintf("the NATS server did not start on %s: is the port in use? "+
			"stop the other process or choose another with --nats-listen", listen)}
	}
	return ns, nil
}

func busyPort(what, addr, flagName string, err error) error {
	return &StartError{Err: err, Msg: fmt.Sprintf("cannot listen for %s on %s (%v): "+
		"stop the process using it or choose another address with %s", what, addr, errors.Unwrap(err), flagName)}
}

func printWhereToLook(out io.Writer, a Addrs, localPG bool) {
	base := "http://" + a.HTTP
	fmt.Fprintf(out, "upwatch is running. Press Ctrl-C to stop.\n")
	fmt.Fprintf(out, "  dashboard:    %s/\n", base)
	fmt.Fprintf(out, "  API:          curl %s/api/v1/monitors\n", base)
	fmt.Fprintf(out, "  health:       curl %s/healthz   metrics: curl %s/metrics\n", base, base)
	fmt.Fprintf(out, "  NATS:         %s   (nats stream info CHECKS --server %s)\n", a.NATSURL, a.NATSURL)
	where := "external"
	if localPG {
		where = "private"
	}
	fmt.Fprintf(out, "  DATABASE_URL: %s   (%s PostgreSQL; psql \"$DATABASE_URL\")\n", a.DatabaseURL, where)
}

// natsLogger sends the embedded server's log to the process's logger. Its
// notices (a banner of some twenty lines at start) go to debug.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
