// Package account works out what became of every slot that fell due: the
// slot arithmetic of the benchmark, kept apart from the database so it can
// be tested on small made-up data.
//
// A monitor's slots are its first due time plus whole intervals. A slot is
// achieved when a result row has its due time, skipped when a skipped_slots
// record covers it, and lost when neither: the number that must be zero.
package account

import "time"

// Monitor is one monitor's cadence.
type Monitor struct {
	ID       int64
	First    time.Time // its first slot
	Interval time.Duration
}

// Skip is one skipped_slots record: Slots consecutive slots from DueAt.
type Skip struct {
	MonitorID int64
	DueAt     time.Time
	Slots     int
}

// Counts are the slot totals over a window.
type Counts struct {
	Expected int // slots due in the window
	Achieved int // result rows with a due time in the window
	Missed   int // expected slots with no result row
	Lost     int // missed slots no skip record covers either
	Skipped  int // missed slots a skip record covers
	// OffCadence counts result rows, over the whole run, whose due time is
	// not one of their monitor's slots.
	OffCadence int
}

// SlotsIn lists the slots first + k·interval (k ≥ 0) inside [w0, w1).
func SlotsIn(first time.Time, interval time.Duration, w0, w1 time.Time) []time.Time {
	if interval <= 0 || !w0.Before(w1) {
		return nil
	}
	k := int64(0)
	if first.Before(w0) {
		// The first k with first + k·interval ≥ w0.
		d := w0.Sub(first)
		k = int64(d / interval)
		if time.Duration(k)*interval < d {
			k++
		}
	}
	var out []time.Time
	for t := first.Add(time.Duration(k) * interval); t.Before(w1); t = t.Add(interval) {
		out = append(out, t)
	}
	return out
}

// OnCadence reports whether due is one of the slots of a monitor.
func OnCadence(first time.Time, interval time.Duration, due time.Time) bool {
	d := due.Sub(first)
	return interval > 0 && d >= 0 && d%interval == 0
}

// Covered returns the set of slot times (Unix microseconds, the database's
// precision) that the skip records cover.
func Covered(skips []Skip, interval time.Duration) map[int64]bool {
	out := map[int64]bool{}
	for _, s := range skips {
		for i := range max(s.Slots, 1) {
			out[s.DueAt.Add(time.Duration(i)*interval).UnixMicro()] = true
		}
	}
	return out
}

// Count accounts for the slots of monitors in [w0, w1). rows holds, per
// monitor, the due times of its result rows over the whole run; skips, its
// skip records.
func Count(monitors []Monitor, rows map[int64][]time.Time, skips map[int64][]Skip, w0, w1 time.Time) Counts {
	var c Counts
	for _, m := range monitors {
		stored := map[int64]int{}
		for _, due := range rows[m.ID] {
			if !OnCadence(m.First, m.Interval, due) {
				c.OffCadence++
				continue
			}
			if !due.Before(w0) && due.Before(w1) {
				c.Achieved++
			}
			stored[due.UnixMicro()]++
		}
		var covered map[int64]bool
		for _, slot := range SlotsIn(m.First, m.Interval, w0, w1) {
			c.Expected++
			if stored[slot.UnixMicro()] > 0 {
				continue
			}
			c.Missed++
			if covered == nil {
				covered = Covered(skips[m.ID], m.Interval)
			}
			if covered[slot.UnixMicro()] {
				c.Skipped++
			} else {
				c.Lost++
			}
		}
	}
	return c
}

// Duplicates counts checks run more than once for one slot: per monitor,
// the target's hits beyond its result rows. hits is indexed by monitor id;
// rows counts result rows per monitor over the whole run.
func Duplicates(hits []uint32, rows map[int64]int) int {
	n := 0
	for id, h := range hits {
		if extra := int(h) - rows[int64(id)]; extra > 0 {
			n += extra
		}
	}
	return n
}
