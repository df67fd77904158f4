// Package fleet is the benchmark's target fleet: HTTP servers on many
// loopback addresses that answer the monitors' checks, count the hits per
// monitor, and behave badly on purpose for a fixed share of the monitors.
//
// Every address serves on the same port: a checker opens a new connection
// per check, and spreading the connections over many destination addresses
// keeps the ephemeral ports of one (source, destination) pair from running
// out under TIME_WAIT.
package fleet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultAddrs is how many loopback addresses serve the fleet.
const DefaultAddrs = 64

// MonitorTimeout is the check timeout every benchmark monitor has.
const MonitorTimeout = 2 * time.Second

// Behaviour is how a target answers one monitor's checks.
type Behaviour int

// The behaviours. The shares are per 10,000 monitors, chosen by a hash of
// the monitor id so the harness, the fleet and the baseline agree on them
// without talking to each other.
const (
	OK      Behaviour = iota // 200 at once
	Slow                     // 200 after 100–300 ms (2% of monitors)
	Fail                     // 500 at once (1%)
	Timeout                  // no answer before the check times out (20%, failing workload only)
)

func (b Behaviour) String() string {
	switch b {
	case OK:
		return "ok"
	case Slow:
		return "slow"
	case Fail:
		return "fail"
	case Timeout:
		return "timeout"
	}
	return "behaviour(" + strconv.Itoa(int(b)) + ")"
}

// mix is splitmix64's finaliser: a cheap, well-spread hash of the id, so
// the odd monitors are not all on one address or one part of the cadence.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Of is the behaviour of monitor id under workload.
func Of(workload string, id int64) Behaviour {
	h := mix(uint64(id)) % 10_000 //nolint:gosec // ids are positive
	if workload == "failing" {
		if h < 2_000 {
			return Timeout
		}
		h -= 2_000
	}
	switch {
	case h < 100:
		return Fail
	case h < 300:
		return Slow
	}
	return OK
}

// SlowDelay is how long a Slow target takes to answer monitor id.
func SlowDelay(id int64) time.Duration {
	return 100*time.Millisecond + time.Duration(mix(uint64(id)+1)%200)*time.Millisecond //nolint:gosec // ids are positive
}

// Host is the loopback address serving monitor id.
func Host(id int64, addrs int) string {
	return "127.0.1." + strconv.FormatInt(1+id%int64(addrs), 10)
}

// URL is the check target of monitor id.
func URL(id int64, port, addrs int) string {
	return "http://" + net.JoinHostPort(Host(id, addrs), strconv.Itoa(port)) + "/m/" + strconv.FormatInt(id, 10)
}

// Config describes a fleet.
type Config struct {
	Workload string
	Monitors int // ids 1..Monitors are counted
	Addrs    int
	// Port serves every address; 0 picks a free one.
	Port int
	// Control serves /hits and /healthz; "127.0.0.1:0" picks a free port.
	Control string
}

// Fleet is a running fleet.
type Fleet struct {
	cfg     Config
	hits    []atomic.Uint32
	servers []*http.Server
	lns     []net.Listener
	port    int
	control net.Listener
}

// Listen opens every listener, so the ports are known before serving.
func Listen(ctx context.Context, cfg Config) (*Fleet, error) {
	var lc net.ListenConfig
	if cfg.Addrs <= 0 {
		cfg.Addrs = DefaultAddrs
	}
	if cfg.Control == "" {
		cfg.Control = "127.0.0.1:0"
	}
	f := &Fleet{cfg: cfg, hits: make([]atomic.Uint32, cfg.Monitors+1), port: cfg.Port}
	for i := range cfg.Addrs {
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("127.0.1."+strconv.Itoa(i+1), strconv.Itoa(f.port)))
		if err != nil {
			f.closeListeners()
			return nil, fmt.Errorf("listen on target address %d: %w", i+1, err)
		}
		if f.port == 0 {
			// The first address picks the port; the others must get the same.
			f.port = ln.Addr().(*net.TCPAddr).Port
		}
		f.lns = append(f.lns, ln)
	}
	ln, err := lc.Listen(ctx, "tcp", cfg.Control)
	if err != nil {
		f.closeListeners()
		return nil, fmt.Errorf("listen on control address: %w", err)
	}
	f.control = ln
	return f, nil
}

func (f *Fleet) closeListeners() {
	for _, ln := range f.lns {
		_ = ln.Close()
	}
	if f.control != nil {
		_ = f.control.Close()
	}
}

// Port is the port every target address serves on.
func (f *Fleet) Port() int { return f.port }

// ControlAddr is where /hits is served.
func (f *Fleet) ControlAddr() string { return f.control.Addr().String() }

// Serve answers checks until ctx ends.
func (f *Fleet) Serve(ctx context.Context) error {
	errc := make(chan error, len(f.lns)+1)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			// Long enough for a Timeout target to outlast the check.
			WriteTimeout: 10 * time.Second,
			IdleTimeout:  10 * time.Second,
		}
	}
	for _, ln := range f.lns {
		srv := newServer(http.HandlerFunc(f.serveCheck))
		f.servers = append(f.servers, srv)
		go func() { errc <- srv.Serve(ln) }()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hits", f.serveHits)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	ctl := newServer(mux)
	f.servers = append(f.servers, ctl)
	go func() { errc <- ctl.Serve(f.control) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range f.servers {
		_ = srv.Shutdown(shutCtx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (f *Fleet) serveCheck(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/m/"), 10, 64)
	if err != nil || id <= 0 {
		http.NotFound(w, r)
		return
	}
	if id < int64(len(f.hits)) {
		f.hits[id].Add(1)
	}
	switch Of(f.cfg.Workload, id) {
	case Slow:
		if !sleep(r.Context(), SlowDelay(id)) {
			return
		}
	case Fail:
		http.Error(w, "failing on purpose", http.StatusInternalServerError)
		return
	case Timeout:
		// Past the monitor's timeout: the checker gives up first.
		if !sleep(r.Context(), MonitorTimeout+time.Second) {
			return
		}
	case OK:
	}
	_, _ = io.WriteString(w, "ok\n")
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// serveHits writes the hit counts as little-endian uint32s, index = monitor
// id (index 0 unused): 400 KB for 100,000 monitors, where JSON would be
// several times that.
func (f *Fleet) serveHits(w http.ResponseWriter, _ *http.Request) {
	buf := make([]byte, 4*len(f.hits))
	for i := range f.hits {
		binary.LittleEndian.PutUint32(buf[4*i:], f.hits[i].Load())
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(buf)
}

// FetchHits reads a fleet's hit counts from its control address.
func FetchHits(ctx context.Context, control string) ([]uint32, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+control+"/hits", http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("build hits request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch hits: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch hits: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read hits: %w", err)
	}
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("hits: %d bytes is not a whole number of counts", len(b))
	}
	hits := make([]uint32, len(b)/4)
	for i := range hits {
		hits[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return hits, nil
}
