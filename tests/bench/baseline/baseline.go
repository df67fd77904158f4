// Package baseline fires the benchmark's checks with nothing around them:
// no queue, no database, one plain HTTP GET on a new connection per check.
// Its CPU per check is the floor the pipeline's overhead is measured
// against.
package baseline

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"upwatch.dev/tests/bench/fleet"
)

// Config describes a baseline run.
type Config struct {
	Monitors    int
	Interval    time.Duration // each monitor once per Interval: Monitors/Interval checks a second
	Duration    time.Duration
	Port        int
	Addrs       int
	Concurrency int
	Timeout     time.Duration
}

// Result is what a baseline run did.
type Result struct {
	Checks  int64   `json:"checks"`
	Errors  int64   `json:"errors"` // transport errors and timeouts; a 500 is a completed check
	Seconds float64 `json:"seconds"`
	Dropped int64   `json:"dropped"` // checks not started on time because every slot was busy
	PerSec  float64 `json:"checks_per_second"`
}

// Run fires the checks evenly spread in time, cycling through the monitor
// ids, at most Concurrency at once.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Monitors <= 0 || cfg.Interval <= 0 || cfg.Duration <= 0 {
		return Result{}, fmt.Errorf("baseline needs monitors, interval and duration (got %d, %s, %s)",
			cfg.Monitors, cfg.Interval, cfg.Duration)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 400
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = fleet.MonitorTimeout
	}
	if cfg.Addrs <= 0 {
		cfg.Addrs = fleet.DefaultAddrs
	}
	// A new connection per check, as a checker makes one.
	client := &http.Client{
		Timeout:   cfg.Timeout,
		Transport: &http.Transport{DisableKeepAlives: true, MaxIdleConns: -1},
	}
	perSecond := float64(cfg.Monitors) / cfg.Interval.Seconds()
	total := int64(perSecond * cfg.Duration.Seconds())
	var res Result
	var checks, errs atomic.Int64
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var next int64
loop:
	for next < total {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		due := min(total, int64(time.Since(start).Seconds()*perSecond))
		for ; next < due; next++ {
			select {
			case sem <- struct{}{}:
			default:
				// Every slot is busy: count it rather than fall behind
				// the schedule without saying so.
				res.Dropped++
				continue
			}
			id := next%int64(cfg.Monitors) + 1
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := get(ctx, client, fleet.URL(id, cfg.Port, cfg.Addrs)); err != nil {
					errs.Add(1)
				}
				checks.Add(1)
			}()
		}
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Checks = checks.Load()
	res.Errors = errs.Load()
	if res.Seconds > 0 {
		res.PerSec = float64(res.Checks) / res.Seconds
	}
	return res, ctx.Err()
}

func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return err
}
