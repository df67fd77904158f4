package tests

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/health"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/queueadmin"
	"upwatch.dev/shared/store"
)

func TestQueueDiscipline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ManualCheckRunsAtOnceWithoutMovingTheSchedule", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		tg := newTarget(t, nil)
		m := s.addMonitor("hourly", "http", tg.url("/"), time.Hour, time.Second)
		s.startResults()
		s.startChecker()
		s.startTicker(100 * time.Millisecond)
		eventually(t, 20*time.Second, "first scheduled result", func() bool {
			return s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, m.ID) == 1
		})
		before, err := s.st.GetMonitor(ctx, m.ID)
		require.NoError(t, err)

		at, err := s.st.RequestCheck(ctx, m.ID)
		require.NoError(t, err)
		var res *store.CheckResult
		eventually(t, 10*time.Second, "the manual check's outcome", func() bool {
			res, err = s.st.FirstResultSince(ctx, m.ID, at)
			require.NoError(t, err)
			return res != nil
		})
		require.True(t, res.Manual)
		require.True(t, res.Up)
		after, err := s.st.GetMonitor(ctx, m.ID)
		require.NoError(t, err)
		require.Equal(t, before.DueAt, after.DueAt, "a manual check does not move the schedule")
		require.Equal(t, 2, tg.hitsOf("/"))

		// A paused monitor cannot be checked by hand.
		_, err = s.mgr.SetEnabled(ctx, m.ID, false)
		require.NoError(t, err)
		_, err = s.st.RequestCheck(ctx, m.ID)
		require.ErrorIs(t, err, store.ErrPaused)
	})

	t.Run("FailingMonitorIsRecheckedOnThePriorityLane", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		failing := newTarget(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
		m, err := s.mgr.Create(ctx, monitor.Spec{Name: "flaky", Kind: "http", Target: failing.url("/"),
			Interval: time.Minute, RetryInterval: time.Second, Timeout: time.Second, Enabled: true})
		require.NoError(t, err)
		s.startResults()
		s.startChecker()
		s.startTicker(100 * time.Millisecond)
		eventually(t, 20*time.Second, "three failed checks a second apart", func() bool {
			return s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, m.ID) >= 3
		})
		got, err := s.st.GetMonitor(ctx, m.ID)
		require.NoError(t, err)
		require.Equal(t, "down", got.State)
		require.Equal(t, queue.LanePriority, got.Lane)
		rows, err := s.st.ListResults(ctx, m.ID, 3)
		require.NoError(t, err)
		require.Equal(t, time.Second, rows[0].DueAt.Sub(rows[1].DueAt), "re-checked at the retry interval")
	})

	t.Run("ChecksOutOfDeliveriesAreClearedAndRecorded", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		tg := newTarget(t, nil)
		m := s.addMonitor("lost", "http", tg.url("/"), time.Hour, time.Second)
		// A consumer whose checkers "crash": every delivery times out.
		cons, err := s.js.CreateOrUpdateConsumer(ctx, queue.ChecksStream,
			queue.CheckerConsumerConfig("default", queue.LaneScheduled, 300*time.Millisecond, 2, 100))
		require.NoError(t, err)
		s.startResults()
		tk := s.startTicker(100 * time.Millisecond)
		eventually(t, 10*time.Second, "a pending check", func() bool { return s.checksPending() == 1 })
		require.NoError(t, tk.stop())
		// Keep pulling as checkers do; JetStream notices the exhausted
		// message when it next looks for one to deliver.
		deliveries := 0
		deadline := time.Now().Add(20 * time.Second)
		for s.checksPending() > 0 {
			require.True(t, time.Now().Before(deadline), "the exhausted check was not cleared from CHECKS")
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
			require.NoError(t, err)
			for range batch.Messages() {
				deliveries++ // and never ack, as a crashed checker would not
			}
		}
		require.Equal(t, 2, deliveries)
		skipped, err := s.st.ListSkipped(ctx, m.ID, true, 10)
		require.NoError(t, err)
		require.Len(t, skipped, 1)
		require.Equal(t, "max deliveries (2) exhausted", skipped[0].Reason)
		require.True(t, skipped[0].Failed)
		require.Zero(t, tg.n.Load())
	})

	t.Run("MalformedMessagesAreTerminatedAndRecorded", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		tg := newTarget(t, nil)
		m := s.addMonitor("fine", "http", tg.url("/"), time.Hour, time.Second)
		_, err := s.js.Publish(ctx, queue.CheckSubject("default", queue.LaneScheduled, 424242), []byte("{not json"))
		require.NoError(t, err)
		_, err = s.js.Publish(ctx, queue.ResultSubject(m.ID), []byte(`{"monitor_id":"x"}`))
		require.NoError(t, err)
		s.startResults()
		s.startChecker()
		s.startTicker(100 * time.Millisecond)
		eventually(t, 20*time.Second, "the good monitor checked", func() bool {
			return s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, m.ID) == 1
		})
		eventually(t, 10*time.Second, "both bad messages recorded", func() bool {
			return s.count(`SELECT count(*) FROM bad_messages`) == 2
		})
		require.Equal(t, 1, s.count(`SELECT count(*) FROM bad_messages WHERE stream = 'CHECKS' AND subject = 'checks.default.scheduled.424242'`))
		require.Equal(t, 1, s.count(`SELECT count(*) FROM bad_messages WHERE stream = 'RESULTS'`))
		eventually(t, 10*time.Second, "CHECKS empty", func() bool { return s.checksPending() == 0 })
	})

	t.Run("HealthInspectAndFlush", func(t *testing.T) {
		t.Parallel()
		const monitors = 50
		s := newSystem(t)
		tg := newTarget(t, nil)
		for i := range monitors {
			s.addMonitor(monitorPath(i), "http", tg.url(monitorPath(i)), time.Minute, time.Second)
		}
		s.startResults()
		tk := s.startTicker(100 * time.Millisecond)
		eventually(t, 10*time.Second, "every monitor dispatched", func() bool { return s.checksPending() == monitors })

		// No checker is running: everything waits, nothing is processed.
		// (The monitors are made older than a minute: a fresh monitor owes
		// only part of a minute's checks.)
		_, err := s.st.Pool().Exec(ctx, `UPDATE monitors SET created_at = now() - interval '5 minutes'`)
		require.NoError(t, err)
		rep, err := health.Collect(ctx, s.js, s.st, 500*time.Millisecond)
		require.NoError(t, err)
		require.Equal(t, uint64(monitors), rep.Depth)
		require.Equal(t, uint64(monitors), rep.Pending)
		require.Zero(t, rep.InFlight)
		require.Positive(t, rep.OldestPendingSeconds)
		require.EqualValues(t, monitors, rep.ActiveMonitors)
		require.InDelta(t, monitors, rep.ExpectedPerMinute, 0.001)
		rep.Evaluate(health.DefaultThresholds())
		require.Equal(t, health.Critical, rep.Status, rep.Reasons) // nothing stored while 50 a minute are due
		th := health.DefaultThresholds()
		th.ProcessedWarn, th.ProcessedCrit = 0, 0
		rep.Evaluate(th)
		require.Equal(t, health.OK, rep.Status, rep.Reasons)
		th.PendingFloor = 10 // 50 waiting of 50 monitors is past both fractions
		rep.Evaluate(th)
		require.Equal(t, health.Critical, rep.Status, rep.Reasons)

		entries, total, err := queueadmin.Inspect(ctx, s.js, 10)
		require.NoError(t, err)
		require.Equal(t, monitors, total)
		require.Len(t, entries, 10)
		require.Equal(t, "pending", entries[0].State)
		require.Equal(t, queue.LaneScheduled, entries[0].Lane)
		require.Positive(t, entries[0].MonitorID)

		require.NoError(t, tk.stop())
		purged, reset, err := queueadmin.Flush(ctx, s.js, s.st)
		require.NoError(t, err)
		require.EqualValues(t, monitors, purged)
		require.EqualValues(t, monitors, reset)
		require.Zero(t, s.checksPending())
		// The next tick dispatches everything due again.
		s.startTicker(100 * time.Millisecond)
		eventually(t, 10*time.Second, "re-dispatched after the flush", func() bool { return s.checksPending() == monitors })
		s.startChecker()
		eventually(t, 20*time.Second, "every monitor checked", func() bool {
			return s.count(`SELECT count(DISTINCT monitor_id) FROM check_results`) == monitors
		})
		entries, _, err = queueadmin.Inspect(ctx, s.js, 0)
		require.NoError(t, err)
		require.Empty(t, entries)
	})
}
