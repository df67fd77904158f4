package tests

import (
	"context"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"upwatch.dev/services/ticker/ticker"
	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/queueadmin"
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

func TestPipeline(t *testing.T) {
	t.Parallel()

	t.Run("CheckIsStoredAndNextSlotFollowsTheInterval", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		tg := newTarget(t, nil)
		m := s.addMonitor("web", "http", tg.url("/health"), 30*time.Second, 2*time.Second)
		s.startResults()
		s.startChecker()
		s.startTicker(100 * time.Millisecond)

		eventually(t, 20*time.Second, "a stored result", func() bool {
			return s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, m.ID) == 1
		})
		rows, err := s.st.ListResults(context.Background(), m.ID, 10)
		require.NoError(t, err)
		require.Len(t, rows, 1)
		require.True(t, rows[0].Up)
		require.Equal(t, 200, *rows[0].StatusCode)
		require.Empty(t, rows[0].Error)
		require.WithinDuration(t, m.DueAt, rows[0].DueAt, time.Millisecond)

		got, err := s.st.GetMonitor(context.Background(), m.ID)
		require.NoError(t, err)
		require.Equal(t, "up", got.State)
		// The next slot is the due slot plus the interval, whatever the
		// check took: no drift.
		require.Equal(t, rows[0].DueAt.Add(30*time.Second), got.DueAt)
		require.Equal(t, got.DueAt, got.NextCheckAt)
		require.Equal(t, 1, tg.hitsOf("/health"))
		eventually(t, 10*time.Second, "CHECKS empty", func() bool { return s.checksPending() == 0 })
	})

	t.Run("DownTargetsGiveTheReason", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		failing := newTarget(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
		hang := make(chan struct{})
		t.Cleanup(func() { close(hang) })
		slow := newTarget(t, func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		})
		// A port with nothing listening: bind one, note it, close it.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		refused := ln.Addr().String()
		require.NoError(t, ln.Close())

		m500 := s.addMonitor("500", "http", failing.url("/"), time.Minute, 2*time.Second)
		mSlow := s.addMonitor("slow", "http", slow.url("/"), time.Minute, 500*time.Millisecond)
		mRefused := s.addMonitor("refused", "http", "http://"+refused+"/", time.Minute, 2*time.Second)
		mTCP := s.addMonitor("tcp-refused", "tcp", refused, time.Minute, 2*time.Second)
		s.startResults()
		s.startChecker()
		s.startTicker(100 * time.Millisecond)

		want := map[int64]string{
			m500.ID:     "unexpected status 500 (expected 2xx)",
			mSlow.ID:    "timeout after 500ms",
			mRefused.ID: "connection refused",
			mTCP.ID:     "connection refused",
		}
		for id, reason := range want {
			eventually(t, 20*time.Second, "result of monitor "+reason, func() bool {
				return s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, id) == 1
			})
			rows, err := s.st.ListResults(context.Background(), id, 1)
			require.NoError(t, err)
			require.False(t, rows[0].Up)
			require.Equal(t, reason, rows[0].Error)
			got, err := s.st.GetMonitor(context.Background(), id)
			require.NoError(t, err)
			require.Equal(t, "down", got.State)
			require.Equal(t, reason, *got.LastError)
		}
	})

	t.Run("StoppedCheckersNeverGrowTheQueuePastOnePerMonitor", func(t *testing.T) {
		t.Parallel()
		const monitors = 200
		s := newSystem(t)
		tg := newTarget(t, nil)
		for i := range monitors {
			s.addMonitor(monitorPath(i), "http", tg.url(monitorPath(i)), time.Second, time.Second)
		}
		s.startResults()
		s.startTicker(100 * time.Millisecond)

		// 30 s of due slots with no checker: the queue holds at most one
		// message per monitor, however many slots pass.
		var maxDepth uint64
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			maxDepth = max(maxDepth, s.checksPending())
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("largest CHECKS depth with checkers stopped: %d", maxDepth)
		require.LessOrEqual(t, maxDepth, uint64(monitors))
		require.Greater(t, maxDepth, uint64(monitors/2), "the ticker kept dispatching")
		require.Zero(t, tg.n.Load())

		restart := time.Now()
		s.startChecker()
		eventually(t, 60*time.Second, "every monitor checked after the checkers came back", func() bool {
			return s.count(`SELECT count(DISTINCT monitor_id) FROM check_results WHERE checked_at > $1`, restart) == monitors
		})
		require.Zero(t, s.count(`SELECT count(*) FROM check_results WHERE checked_at < $1`, restart))
		// Missed slots are coalesced and recorded, not replayed: the next
		// claim of each monitor folds the slots it missed into one.
		eventually(t, 20*time.Second, "missed slots recorded", func() bool {
			return s.count(`SELECT count(DISTINCT monitor_id) FROM skipped_slots WHERE reason = 'coalesced'`) == monitors
		})
		for i := range monitors {
			require.Positive(t, tg.hitsOf(monitorPath(i)))
		}
	})

	t.Run("TwoTickersNeverDispatchASlotTwice", func(t *testing.T) {
		t.Parallel()
		const monitors = 100
		s := newSystem(t)
		tg := newTarget(t, nil)
		for i := range monitors {
			s.addMonitor(monitorPath(i), "http", tg.url(monitorPath(i)), time.Second, time.Second)
		}
		_, reg := s.startResults()
		s.startChecker()
		t1, reg1 := s.startTickerWithMetrics(100 * time.Millisecond)
		t2, reg2 := s.startTickerWithMetrics(100 * time.Millisecond)
		time.Sleep(30 * time.Second)
		require.NoError(t, t1.stop())
		require.NoError(t, t2.stop())
		eventually(t, 20*time.Second, "CHECKS drained", func() bool { return s.checksPending() == 0 })
		// Let the last outcomes be stored.
		eventually(t, 20*time.Second, "every check stored", func() bool {
			return s.count(`SELECT count(*) FROM check_results`) == int(tg.n.Load())
		})

		rows := s.count(`SELECT count(*) FROM check_results`)
		t.Logf("checks in 30 s with two tickers: %d", rows)
		require.Greater(t, rows, monitors*20, "both tickers together kept every monitor near its 1 s interval")
		// One request per stored slot: had a slot been dispatched twice,
		// the target would have seen more requests than there are rows.
		for i := range monitors {
			id := int64(i + 1)
			require.Equal(t, s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, id),
				tg.hitsOf(monitorPath(i)), "monitor %d", id)
		}
		require.Zero(t, counterValue(t, reg, "upwatch_results_outcomes_total", "duplicate"))

		// No self-requeue: every message CHECKS ever stored was published
		// by one of the two tickers.
		stream, err := s.js.Stream(context.Background(), "CHECKS")
		require.NoError(t, err)
		info, err := stream.Info(context.Background())
		require.NoError(t, err)
		published := counterValue(t, reg1, "upwatch_ticker_dispatches_total", "published") +
			counterValue(t, reg2, "upwatch_ticker_dispatches_total", "published")
		require.Positive(t, published)
		require.Equal(t, uint64(published), info.State.LastSeq, "messages stored in CHECKS = messages the tickers published")
	})

	t.Run("DeletedMonitorsPendingCheckIsDiscarded", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		tg := newTarget(t, nil)
		doomed := s.addMonitor("doomed", "http", tg.url("/doomed"), time.Minute, time.Second)
		s.startResults()
		ticker := s.startTicker(100 * time.Millisecond)
		eventually(t, 10*time.Second, "a pending check", func() bool { return s.checksPending() == 1 })
		require.NoError(t, ticker.stop())

		require.NoError(t, s.mgr.Delete(context.Background(), doomed.ID))
		require.Zero(t, s.checksPending(), "the pending check left the queue with the monitor")
		require.Equal(t, 1, s.count(`SELECT count(*) FROM skipped_slots WHERE monitor_id = $1 AND reason = 'monitor deleted'`, doomed.ID))

		// A live monitor proves the checkers ran while the doomed one did not.
		alive := s.addMonitor("alive", "http", tg.url("/alive"), time.Minute, time.Second)
		s.startChecker()
		s.startTicker(100 * time.Millisecond)
		eventually(t, 20*time.Second, "the live monitor checked", func() bool {
			return s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, alive.ID) == 1
		})
		require.Zero(t, s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, doomed.ID))
		require.Zero(t, tg.hitsOf("/doomed"))
	})

	t.Run("PausedMonitorsCheckAlreadyHeldByACheckerIsNotRun", func(t *testing.T) {
		t.Parallel()
		s := newSystem(t)
		tg := newTarget(t, nil)
		m := s.addMonitor("held", "http", tg.url("/held"), time.Minute, time.Second)
		// Due in 4 s and claimed at once: the checker fetches the check and
		// holds it until its due time, which leaves room to pause the
		// monitor while the check is in the checker's hands.
		_, err := s.st.Pool().Exec(context.Background(),
			`UPDATE monitors SET due_at = now() + interval '4 s', next_check_at = now() + interval '4 s' WHERE id = $1`, m.ID)
		require.NoError(t, err)
		_, reg := s.startCheckerWithMetrics()
		s.startResults()
		s.startTickerWith(func(cfg *ticker.Config) {
			cfg.Tick = 100 * time.Millisecond
			cfg.Lookahead = 4500 * time.Millisecond
		})
		eventually(t, 3*time.Second, "the check held by the checker", func() bool {
			entries, _, err := queueadmin.Inspect(context.Background(), s.js, 0)
			require.NoError(t, err)
			return len(entries) == 1 && entries[0].State == "in flight"
		})
		_, err = s.mgr.SetEnabled(context.Background(), m.ID, false)
		require.NoError(t, err)
		eventually(t, 10*time.Second, "the held check dropped", func() bool {
			return counterValue(t, reg, "upwatch_checker_terminated_total", "monitor_removed") == 1
		})
		require.Zero(t, tg.hitsOf("/held"), "the paused monitor's target was not checked")
		require.Zero(t, s.count(`SELECT count(*) FROM check_results WHERE monitor_id = $1`, m.ID))
	})
}
