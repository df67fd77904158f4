package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func newMonitor(t *testing.T, st *store.Store, name string, interval time.Duration) store.Monitor {
	t.Helper()
	spec := monitor.Spec{Name: name, Kind: "tcp", Target: "127.0.0.1:1", Interval: interval, Enabled: true}
	require.NoError(t, spec.Normalize())
	m, err := st.CreateMonitor(context.Background(), spec)
	require.NoError(t, err)
	return m
}

func resultFor(c store.Claimed, up bool) queue.Result {
	now := time.Now()
	return queue.Result{MonitorID: c.ID, Region: "default", DueAt: c.DueAt, Attempt: c.Attempt,
		StartedAt: now, FinishedAt: now, Up: up, LatencyMS: 1.5}
}

func TestStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("MigrateIsIdempotent", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		applied, err := st.Migrate(ctx)
		require.NoError(t, err)
		require.Empty(t, applied)
		v, err := st.SchemaVersion(ctx)
		require.NoError(t, err)
		require.Equal(t, store.LatestVersion(), v)
	})

	t.Run("ClaimLeasesAndResultsMoveTheCadence", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		m := newMonitor(t, st, "a", 10*time.Second)

		claimed, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		c := claimed[0]
		require.Equal(t, m.ID, c.ID)
		require.Equal(t, 1, c.Attempt)
		require.Zero(t, c.Coalesced)
		require.WithinDuration(t, m.DueAt, c.DueAt, time.Millisecond)

		// Leased: a second claim finds nothing.
		again, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Empty(t, again)

		stats, err := st.WriteResults(ctx, []queue.Result{resultFor(c, true)})
		require.NoError(t, err)
		require.Equal(t, store.WriteStats{Stored: 1}, stats)
		got, err := st.GetMonitor(ctx, m.ID)
		require.NoError(t, err)
		require.Equal(t, "up", got.State)
		require.WithinDuration(t, c.DueAt.Add(10*time.Second), got.DueAt, time.Millisecond)
		require.WithinDuration(t, c.DueAt.Add(10*time.Second), got.NextCheckAt, time.Millisecond)

		// A redelivered outcome stores nothing and does not move the slot.
		stats, err = st.WriteResults(ctx, []queue.Result{resultFor(c, true)})
		require.NoError(t, err)
		require.Equal(t, store.WriteStats{Duplicates: 1}, stats)
		got2, err := st.GetMonitor(ctx, m.ID)
		require.NoError(t, err)
		require.Equal(t, got.DueAt, got2.DueAt)
		rows, err := st.ListResults(ctx, m.ID, 10)
		require.NoError(t, err)
		require.Len(t, rows, 1)
	})

	t.Run("LookaheadClaimsSlotsDueSoon", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		m := newMonitor(t, st, "soon", time.Minute)
		_, err := st.Pool().Exec(ctx, `UPDATE monitors SET due_at = now() + interval '600 ms',
			next_check_at = now() + interval '600 ms' WHERE id = $1`, m.ID)
		require.NoError(t, err)
		none, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Empty(t, none, "not due yet")
		claimed, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, time.Second)
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		require.True(t, claimed[0].DueAt.After(time.Now()), "the slot is kept, not moved to now")
		require.Zero(t, claimed[0].Coalesced)
	})

	t.Run("MissedSlotsAreCoalescedAndRecorded", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		m := newMonitor(t, st, "b", 10*time.Second)
		_, err := st.Pool().Exec(ctx, `UPDATE monitors SET due_at = now() - interval '95 seconds',
			next_check_at = now() - interval '95 seconds' WHERE id = $1`, m.ID)
		require.NoError(t, err)
		claimed, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		require.Equal(t, 9, claimed[0].Coalesced)
		require.WithinDuration(t, time.Now().Add(-5*time.Second), claimed[0].DueAt, 2*time.Second)
		var slots int
		require.NoError(t, st.Pool().QueryRow(ctx,
			`SELECT sum(slots) FROM skipped_slots WHERE monitor_id = $1 AND reason = 'coalesced'`, m.ID).Scan(&slots))
		require.Equal(t, 9, slots)
	})

	t.Run("ExpiredLeaseRedispatchesTheSameSlotAsANewAttempt", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		m := newMonitor(t, st, "c", time.Hour)
		first, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Len(t, first, 1)
		_, err = st.Pool().Exec(ctx, `UPDATE monitors SET next_check_at = now() WHERE id = $1`, m.ID)
		require.NoError(t, err)
		second, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Len(t, second, 1)
		require.Equal(t, first[0].DueAt, second[0].DueAt)
		require.Equal(t, 2, second[0].Attempt)
		require.NotEqual(t,
			queue.CheckMsgID(m.ID, "default", first[0].DueAt, first[0].Attempt),
			queue.CheckMsgID(m.ID, "default", second[0].DueAt, second[0].Attempt))
	})

	t.Run("OutcomesOfDeletedOrPausedMonitorsAreDiscarded", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		gone := newMonitor(t, st, "gone", time.Minute)
		paused := newMonitor(t, st, "paused", time.Minute)
		claimed, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Len(t, claimed, 2)
		require.NoError(t, st.DeleteMonitor(ctx, gone.ID))
		_, err = st.UpdateMonitor(ctx, paused.ID, func(s *monitor.Spec) error { s.Enabled = false; return nil })
		require.NoError(t, err)
		stats, err := st.WriteResults(ctx, []queue.Result{resultFor(claimed[0], false), resultFor(claimed[1], false)})
		require.NoError(t, err)
		require.Equal(t, store.WriteStats{Discarded: 2}, stats)
		var n int
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM check_results`).Scan(&n))
		require.Zero(t, n)
		require.NoError(t, st.Pool().QueryRow(ctx,
			`SELECT count(*) FROM skipped_slots WHERE reason IN ('monitor deleted', 'monitor paused')`).Scan(&n))
		require.Equal(t, 2, n)
		// Paused monitors are not claimed.
		_, err = st.Pool().Exec(ctx, `UPDATE monitors SET next_check_at = now() - interval '1 hour'`)
		require.NoError(t, err)
		again, err := st.ClaimDue(ctx, "default", 10, 30*time.Second, 0)
		require.NoError(t, err)
		require.Empty(t, again)
	})

	t.Run("ConcurrentClaimsNeverShareAMonitor", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		for i := range 300 {
			newMonitor(t, st, "m"+time.Duration(i).String(), time.Minute)
		}
		type res struct {
			ids []int64
			err error
		}
		out := make(chan res, 4)
		for range 4 {
			go func() {
				var ids []int64
				for {
					c, err := st.ClaimDue(ctx, "default", 25, 30*time.Second, 0)
					if err != nil || len(c) == 0 {
						out <- res{ids, err}
						return
					}
					for _, x := range c {
						ids = append(ids, x.ID)
					}
				}
			}()
		}
		seen := map[int64]bool{}
		for range 4 {
			r := <-out
			require.NoError(t, r.err)
			for _, id := range r.ids {
				require.False(t, seen[id], "monitor %d claimed twice", id)
				seen[id] = true
			}
		}
		require.Len(t, seen, 300)
	})

	t.Run("RollupsAndUptime", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		m := newMonitor(t, st, "r", time.Minute)
		// Ten checks two hours ago (8 up), and three in the current hour (all up).
		base := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
		var batch []queue.Result
		for i := range 10 {
			due := base.Add(time.Duration(i) * time.Minute)
			batch = append(batch, queue.Result{MonitorID: m.ID, Region: "default", DueAt: due, Attempt: 1,
				StartedAt: due, FinishedAt: due, Up: i >= 2, LatencyMS: float64(10 * (i + 1))})
		}
		for i := range 3 {
			due := time.Now().Add(-time.Duration(i+1) * time.Second)
			batch = append(batch, queue.Result{MonitorID: m.ID, Region: "default", DueAt: due, Attempt: 1,
				StartedAt: due, FinishedAt: due, Up: true, LatencyMS: 5})
		}
		_, err := st.WriteResults(ctx, batch)
		require.NoError(t, err)

		hours, err := st.RollUp(ctx, time.Now(), 3*time.Hour)
		require.NoError(t, err)
		require.Equal(t, 1, hours)
		again, err := st.RollUp(ctx, time.Now(), 3*time.Hour)
		require.NoError(t, err)
		require.Equal(t, 1, again, "rolling up again recomputes, not adds")
		var checks, up int
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT checks, up_checks FROM check_rollups_hourly WHERE monitor_id = $1`, m.ID).Scan(&checks, &up))
		require.Equal(t, [2]int{10, 8}, [2]int{checks, up})

		u, err := st.Uptime(ctx, m.ID, time.Now().Add(-24*time.Hour))
		require.NoError(t, err)
		require.EqualValues(t, 13, u.Checks, "rolled-up hours plus raw rows of the hour not rolled up yet")
		require.EqualValues(t, 11, u.UpChecks)
		require.InDelta(t, 100*11.0/13, u.Percent, 0.001)
		require.InDelta(t, 100.0, u.MaxLatencyMS, 0.001)
		require.InDelta(t, (550.0+15)/13, u.AvgLatencyMS, 0.001)
	})

	t.Run("PartitionsAreCreatedAndDropped", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		old := time.Now().AddDate(0, 0, -40)
		require.NoError(t, st.EnsurePartitions(ctx, old, 1))
		dropped, err := st.DropPartitionsBefore(ctx, time.Now().AddDate(0, 0, -30))
		require.NoError(t, err)
		require.Len(t, dropped, 2)
	})
}
