package harness

import (
	"context"
	"math"
	"time"

	"upwatch.dev/shared/queue"
	"upwatch.dev/tests/bench/fleet"
	"upwatch.dev/tests/bench/procstat"
	"upwatch.dev/tests/bench/report"
)

// sample is one second's reading of the processes and the queue.
type sample struct {
	at    time.Time
	depth int64             // CHECKS messages; -1 when NATS did not answer
	cpu   map[string]uint64 // cumulative ticks per role
	rss   map[string]uint64 // bytes per role (PostgreSQL: summed Pss)
}

// timeline is what happened when, for the analysis.
type timeline struct {
	start     time.Time // first monitor's first slot
	w0, w1    time.Time // the measured window
	stopAt    time.Time // checker stopped (recovery)
	restartAt time.Time // checker started again (recovery)
	drained   time.Duration
}

// roleCPU is the cumulative CPU ticks of one role.
func (r *runner) roleCPU(name string) (uint64, error) {
	r.mu.Lock()
	ro := r.roles[name]
	var cur *proc
	var retired uint64
	if ro != nil {
		cur, retired = ro.cur, ro.retired
	}
	r.mu.Unlock()
	if name == report.Postgres {
		t, err := procstat.ReadTree(r.pgPID)
		return t.CPU, err
	}
	if cur == nil {
		return retired, nil
	}
	ticks, err := cur.cpuTicks()
	return retired + ticks, err
}

// cpuSnapshot reads every role's cumulative CPU ticks.
func (r *runner) cpuSnapshot() map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range report.ProcessOrder {
		if name == report.Baseline {
			continue
		}
		if ticks, err := r.roleCPU(name); err == nil {
			out[name] = ticks
		}
	}
	return out
}

// takeSample reads the queue depth, CPU and memory of every process, and
// keeps each role's peak resident memory.
func (r *runner) takeSample(ctx context.Context) sample {
	s := sample{at: time.Now(), depth: r.streamMsgs(ctx, queue.ChecksStream), cpu: r.cpuSnapshot(), rss: map[string]uint64{}}
	for _, name := range report.ProcessOrder {
		r.mu.Lock()
		ro := r.roles[name]
		var cur *proc
		if ro != nil {
			cur = ro.cur
		}
		r.mu.Unlock()
		var rss, peak uint64
		switch {
		case name == report.Postgres:
			t, err := procstat.ReadTree(r.pgPID)
			if err != nil {
				continue
			}
			rss, peak = t.Pss, t.Pss
		case cur != nil && !cur.exited():
			m, err := procstat.ReadMemory(cur.pid())
			if err != nil {
				continue
			}
			rss, peak = m.RSS, m.HWM
		default:
			continue
		}
		s.rss[name] = rss
		r.mu.Lock()
		ro.peakRSS = max(ro.peakRSS, peak)
		r.mu.Unlock()
	}
	return s
}

// sampleEvery samples once a second until ctx ends.
func (r *runner) sampleEvery(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s := r.takeSample(ctx)
		r.mu.Lock()
		r.samples = append(r.samples, s)
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure runs the workload and builds the result.
func (r *runner) measure(ctx context.Context) (*report.Result, error) {
	cfg := r.cfg
	if err := r.startService(ctx, report.Results, cfg.ResultsArgs, "--batch", "500", "--batch-wait", "100ms"); err != nil {
		return nil, err
	}
	if err := r.startChecker(ctx); err != nil {
		return nil, err
	}
	if err := r.startService(ctx, report.Ticker, cfg.TickerArgs); err != nil {
		return nil, err
	}

	// Slots start on a whole second a little ahead, so the first ones are
	// not already late while the monitors are being copied in.
	var tl timeline
	tl.start = time.Now().Truncate(time.Second).Add(3 * time.Second)
	tl.w0 = tl.start.Add(cfg.Warmup).Truncate(time.Second)
	tl.w1 = tl.w0.Add(cfg.Outage + cfg.Duration)
	n := int64(cfg.Monitors)
	ivMicros := cfg.Interval.Microseconds()
	first := func(id int64) time.Time {
		// Spread evenly over one interval, to the database's microsecond.
		return tl.start.Add(time.Duration((id-1)*ivMicros/n) * time.Microsecond)
	}
	if cfg.Workload == "burst" {
		// Every monitor due in the same second, at the start of the window.
		first = func(int64) time.Time { return tl.w0 }
	}
	if err := r.createMonitors(ctx, first); err != nil {
		return nil, err
	}

	sctx, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go r.sampleEvery(sctx, samplerDone)
	defer func() {
		stopSampling()
		<-samplerDone
	}()

	r.logf("warm-up until %s, window %s .. %s", tl.w0.Format("15:04:05"), tl.w0.Format("15:04:05"), tl.w1.Format("15:04:05"))
	if err := sleepUntil(ctx, tl.w0); err != nil {
		return nil, err
	}
	cpu0 := r.cpuSnapshot()
	size0, err := r.dbSize(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.Workload == "recovery" {
		r.logf("stopping the checker for %s", cfg.Outage)
		tl.stopAt = time.Now()
		if err := r.stopRole(report.Checker, 60*time.Second); err != nil {
			return nil, err
		}
		if err := sleepUntil(ctx, tl.stopAt.Add(cfg.Outage)); err != nil {
			return nil, err
		}
		tl.restartAt = time.Now()
		if err := r.startChecker(ctx); err != nil {
			return nil, err
		}
		r.logf("checker restarted")
	}
	if err := sleepUntil(ctx, tl.w1); err != nil {
		return nil, err
	}
	cpu1 := r.cpuSnapshot()
	size1, err := r.dbSize(ctx)
	if err != nil {
		return nil, err
	}
	peaks := r.peaks()

	// Slots due just before w1 are claimed at the next tick or two; the
	// ticker keeps running until every slot due before w1 has an outcome
	// or a skip record (the monitor's due_at has moved past w1), so a
	// slow tick at the end of the window is not counted as a lost slot.
	if err := sleepUntil(ctx, tl.w1.Add(cfg.Tail)); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, cfg.DrainTimeout, "every slot due in the window resolved", func() bool {
		var behind int64
		err := r.pool.QueryRow(ctx, `SELECT count(*) FROM monitors WHERE enabled AND due_at < $1`, tl.w1).Scan(&behind)
		return err == nil && behind == 0
	}); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		// Not fatal: the accounting shows what was left behind.
		r.logf("warning: %v", err)
	}
	if err := r.stopRole(report.Ticker, 30*time.Second); err != nil {
		return nil, err
	}
	r.logf("ticker stopped; waiting for CHECKS and RESULTS to drain")
	drainStart := time.Now()
	if err := waitFor(ctx, cfg.DrainTimeout, "CHECKS and RESULTS drained", func() bool {
		return r.streamMsgs(ctx, queue.ChecksStream) == 0 && r.streamMsgs(ctx, queue.ResultsStream) == 0
	}); err != nil {
		return nil, err
	}
	tl.drained = time.Since(drainStart)
	stopSampling()
	<-samplerDone

	hits, err := fleet.FetchHits(ctx, r.fleetControl)
	if err != nil {
		return nil, err
	}
	if err := r.stopRole(report.Checker, 60*time.Second); err != nil {
		return nil, err
	}
	if err := r.stopRole(report.Results, 60*time.Second); err != nil {
		return nil, err
	}

	res, err := r.analyze(ctx, tl, hits)
	if err != nil {
		return nil, err
	}
	window := tl.w1.Sub(tl.w0).Seconds()
	res.DBGrowthBytesPerDay = float64(size1-size0) / window * 86400
	res.DrainSeconds = tl.drained.Seconds()
	r.costs(res, cpu0, cpu1, peaks)

	// The baseline runs alone: the pipeline's processes are stopped so
	// they do not share the CPU with it.
	r.pool.Close()
	r.pool = nil
	r.nc.Close()
	r.pg.Stop()
	r.pg = nil
	if err := r.roles[report.NATS].cur.stop(30 * time.Second); err != nil {
		return nil, err
	}
	bd := min(cfg.Duration, cfg.BaselineMax)
	r.logf("bare baseline for %s", bd)
	tcpu0, _ := r.roleCPU(report.Targets)
	br, bcpu, brss, err := r.runBaseline(ctx, bd)
	if err != nil {
		return nil, err
	}
	tcpu1, _ := r.roleCPU(report.Targets)
	res.Baseline = report.BaselineRun{Checks: br.Checks, Errors: br.Errors, Dropped: br.Dropped, Seconds: br.Seconds}
	bp := report.Process{CPUSeconds: bcpu.Seconds(), PeakRSSBytes: brss}
	if br.Checks > 0 {
		res.BareCPUPerCheck = bcpu.Seconds() / float64(br.Checks)
		bp.CPUSecondsPer1000Checks = 1000 * res.BareCPUPerCheck
	}
	res.Processes[report.Baseline] = bp
	if res.BareCPUPerCheck > 0 {
		res.OverheadRatio = res.PipelineCPUPerCheck / res.BareCPUPerCheck
	}
	r.logf("baseline: %d checks in %.1fs, targets used %.2f CPU s meanwhile", br.Checks, br.Seconds,
		float64(tcpu1-tcpu0)/procstat.TicksPerSecond)
	return res, nil
}

// peaks is each role's peak resident memory so far.
func (r *runner) peaks() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]uint64{}
	for name, ro := range r.roles {
		out[name] = ro.peakRSS
	}
	return out
}

// costs fills in the per-process CPU and memory over the window.
func (r *runner) costs(res *report.Result, cpu0, cpu1, peaks map[string]uint64) {
	if res.Processes == nil {
		res.Processes = map[string]report.Process{}
	}
	var pipeline float64
	for _, name := range report.ProcessOrder {
		c1, ok := cpu1[name]
		if !ok {
			continue
		}
		sec := float64(c1-min(c1, cpu0[name])) / procstat.TicksPerSecond
		p := report.Process{CPUSeconds: sec, PeakRSSBytes: peaks[name]}
		if res.AchievedChecks > 0 {
			p.CPUSecondsPer1000Checks = 1000 * sec / float64(res.AchievedChecks)
		}
		res.Processes[name] = p
	}
	for _, name := range report.Pipeline {
		pipeline += res.Processes[name].CPUSeconds
	}
	for _, name := range report.Services {
		res.ServicesPeakRSSBytes += res.Processes[name].PeakRSSBytes
	}
	if res.AchievedChecks > 0 {
		res.PipelineCPUPerCheck = pipeline / float64(res.AchievedChecks)
	}
}

// series turns the samples, and the per-second counts from the database,
// into aligned per-second series from the window's start.
func (r *runner) series(tl timeline, stored map[int64]float64, lagP99 map[int64]float64) report.Series {
	r.mu.Lock()
	samples := append([]sample(nil), r.samples...)
	r.mu.Unlock()
	s := report.Series{CPUPercent: map[string][]float64{}, RSSBytes: map[string][]uint64{}}
	if len(samples) == 0 {
		return s
	}
	base := tl.w0.Unix()
	from := samples[0].at.Unix() - base
	to := samples[len(samples)-1].at.Unix() - base
	n := int(to-from) + 1
	idx := func(t time.Time) int { return int(t.Unix() - base - from) }
	s.T = make([]int64, n)
	s.ChecksPerSecond = make([]float64, n)
	s.LagP99Seconds = make([]*float64, n)
	s.ChecksDepth = make([]*float64, n)
	for i := range n {
		sec := from + int64(i)
		s.T[i] = sec
		s.ChecksPerSecond[i] = stored[base+sec]
		if v, ok := lagP99[base+sec]; ok {
			s.LagP99Seconds[i] = &v
		}
	}
	names := []string{}
	for _, name := range report.ProcessOrder {
		if _, ok := samples[0].cpu[name]; ok {
			names = append(names, name)
			s.CPUPercent[name] = make([]float64, n)
			s.RSSBytes[name] = make([]uint64, n)
		}
	}
	for k, smp := range samples {
		i := idx(smp.at)
		if i < 0 || i >= n {
			continue
		}
		if smp.depth >= 0 {
			d := float64(smp.depth)
			s.ChecksDepth[i] = &d
		}
		for _, name := range names {
			s.RSSBytes[name][i] = smp.rss[name]
			if k == 0 {
				continue
			}
			prev := samples[k-1]
			dt := smp.at.Sub(prev.at).Seconds()
			c1, c0 := smp.cpu[name], prev.cpu[name]
			if dt > 0 && c1 >= c0 {
				s.CPUPercent[name][i] = math.Round(1000*float64(c1-c0)/procstat.TicksPerSecond/dt) / 10
			}
		}
	}
	return s
}

// maxDepth is the largest CHECKS depth sampled.
func (r *runner) maxDepth() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m int64
	for _, s := range r.samples {
		m = max(m, s.depth)
	}
	return m
}
