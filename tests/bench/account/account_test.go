package account

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func TestSlotsIn(t *testing.T) {
	iv := 10 * time.Second
	// First slot at 3 s; window [20, 50): slots 23, 33, 43.
	assert.Equal(t, []time.Time{at(23), at(33), at(43)}, SlotsIn(at(3), iv, at(20), at(50)))
	// A slot exactly on w0 is inside, one exactly on w1 is not.
	assert.Equal(t, []time.Time{at(20), at(30), at(40)}, SlotsIn(at(0), iv, at(20), at(50)))
	// First slot after the window starts.
	assert.Equal(t, []time.Time{at(45)}, SlotsIn(at(45), iv, at(20), at(50)))
	// First slot after the window ends, and an empty window.
	assert.Empty(t, SlotsIn(at(60), iv, at(20), at(50)))
	assert.Empty(t, SlotsIn(at(0), iv, at(20), at(20)))
	// Sub-second offsets, as monitors spread over an interval have.
	assert.Equal(t, []time.Time{at(20.25), at(30.25)}, SlotsIn(at(0.25), iv, at(20), at(40)))
}

func TestOnCadence(t *testing.T) {
	iv := 10 * time.Second
	assert.True(t, OnCadence(at(3), iv, at(3)))
	assert.True(t, OnCadence(at(3), iv, at(33)))
	assert.False(t, OnCadence(at(3), iv, at(34)))
	assert.False(t, OnCadence(at(3), iv, at(33.000001)))
	assert.False(t, OnCadence(at(3), iv, at(-7)), "before the first slot")
}

func TestCovered(t *testing.T) {
	c := Covered([]Skip{{DueAt: at(10), Slots: 3}, {DueAt: at(100), Slots: 1}}, 10*time.Second)
	for _, s := range []float64{10, 20, 30, 100} {
		assert.True(t, c[at(s).UnixMicro()], "slot %v covered", s)
	}
	assert.False(t, c[at(40).UnixMicro()], "a run of 3 from 10 s ends at 30 s")
	assert.False(t, c[at(0).UnixMicro()])
}

func TestCount(t *testing.T) {
	iv := 10 * time.Second
	monitors := []Monitor{
		{ID: 1, First: at(0), Interval: iv}, // every slot stored
		{ID: 2, First: at(5), Interval: iv}, // one slot skipped, one lost
		{ID: 3, First: at(2), Interval: iv}, // a row off its cadence and one stored twice
	}
	// Window [20, 50): monitor 1 has slots 20, 30, 40; 2 has 25, 35, 45; 3 has 22, 32, 42.
	rows := map[int64][]time.Time{
		1: {at(0), at(10), at(20), at(30), at(40), at(50)},
		2: {at(5), at(15), at(25)},
		3: {at(22), at(32), at(32), at(37), at(42)},
	}
	// Monitor 2: a coalesced run 30..35 covers slot 35; 45 is lost.
	skips := map[int64][]Skip{2: {{MonitorID: 2, DueAt: at(35), Slots: 1}}}
	c := Count(monitors, rows, skips, at(20), at(50))
	assert.Equal(t, Counts{
		Expected:   9,
		Achieved:   3 + 1 + 4, // rows inside the window, the duplicate of 32 included
		Missed:     2,
		Lost:       1,
		Skipped:    1,
		OffCadence: 1,
	}, c)
}

func TestCountSkipStartingBeforeWindow(t *testing.T) {
	iv := 10 * time.Second
	monitors := []Monitor{{ID: 7, First: at(0), Interval: iv}}
	// An outage coalesced slots 10..30 into one record that starts before
	// the window and reaches into it; slot 40 is covered by nothing.
	skips := map[int64][]Skip{7: {{MonitorID: 7, DueAt: at(10), Slots: 3}}}
	rows := map[int64][]time.Time{7: {at(0), at(50)}}
	c := Count(monitors, rows, skips, at(20), at(60))
	assert.Equal(t, Counts{Expected: 4, Achieved: 1, Missed: 3, Skipped: 2, Lost: 1}, c)
}

func TestDuplicates(t *testing.T) {
	hits := []uint32{0, 3, 2, 5, 0}
	rows := map[int64]int{1: 3, 2: 3, 3: 4}
	// Monitor 2 has more rows than hits (a lost hit count is not a
	// duplicate); monitor 3 was checked once more than stored.
	assert.Equal(t, 1, Duplicates(hits, rows))
	require.Zero(t, Duplicates(nil, rows))
}
