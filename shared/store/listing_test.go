package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/pgtest"
	"upwatch.dev/shared/store"
)

func TestListing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("PagesWalkEveryMonitorOnce", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		var want []int64
		for i := range 23 {
			want = append(want, newMonitor(t, st, fmt.Sprintf("m%02d", i), time.Minute).ID)
		}
		// A deleted monitor leaves a gap in the ids, which paging must not mind.
		require.NoError(t, st.DeleteMonitor(ctx, want[5]))
		want = append(want[:5], want[6:]...)

		var got []int64
		var after int64
		pages := 0
		for {
			page, err := st.ListMonitorsPage(ctx, store.MonitorFilter{AfterID: after, Limit: 5})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), 5)
			pages++
			for _, m := range page {
				got = append(got, m.ID)
			}
			if len(page) < 5 {
				break
			}
			after = page[len(page)-1].ID
		}
		require.Equal(t, want, got, "every monitor once, by id")
		require.Equal(t, 5, pages)

		all, err := st.ListMonitors(ctx)
		require.NoError(t, err)
		first, err := st.ListMonitorsPage(ctx, store.MonitorFilter{Limit: 1})
		require.NoError(t, err)
		require.Equal(t, all[:1], first, "a page holds the same monitors as the full list")
	})

	t.Run("Filters", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		web := newMonitor(t, st, "Web-Frontend", time.Minute)
		api := newMonitor(t, st, "api", time.Minute)
		db := newMonitor(t, st, "web_db 100%", time.Minute)
		_, err := st.Pool().Exec(ctx, `UPDATE monitors SET state = 'down' WHERE id = ANY($1)`, []int64{web.ID, db.ID})
		require.NoError(t, err)
		_, err = st.Pool().Exec(ctx, `UPDATE monitors SET state = 'up' WHERE id = $1`, api.ID)
		require.NoError(t, err)

		ids := func(f store.MonitorFilter) []int64 {
			t.Helper()
			f.Limit = 100
			ms, err := st.ListMonitorsPage(ctx, f)
			require.NoError(t, err)
			out := []int64{}
			for _, m := range ms {
				out = append(out, m.ID)
			}
			return out
		}
		require.Equal(t, []int64{web.ID, db.ID}, ids(store.MonitorFilter{State: "down"}))
		require.Equal(t, []int64{api.ID}, ids(store.MonitorFilter{State: "up"}))
		require.Empty(t, ids(store.MonitorFilter{State: "unknown"}))
		require.Equal(t, []int64{web.ID, db.ID}, ids(store.MonitorFilter{NameContains: "WEB"}), "case is ignored")
		require.Equal(t, []int64{db.ID}, ids(store.MonitorFilter{NameContains: "0%"}), "% is literal")
		require.Equal(t, []int64{db.ID}, ids(store.MonitorFilter{NameContains: "_"}), "_ is literal")
		require.Equal(t, []int64{db.ID}, ids(store.MonitorFilter{NameContains: "web", State: "down", AfterID: web.ID}))
		require.Empty(t, ids(store.MonitorFilter{NameContains: "api", State: "down"}))

		_, err = st.ListMonitorsPage(ctx, store.MonitorFilter{Limit: 10, State: "sideways"})
		require.Error(t, err)
		_, err = st.ListMonitorsPage(ctx, store.MonitorFilter{Limit: 0})
		require.Error(t, err)
		_, err = st.ListMonitorsPage(ctx, store.MonitorFilter{Limit: store.MaxPageLimit + 1})
		require.Error(t, err)
	})

	t.Run("CountMonitorsByState", func(t *testing.T) {
		st, _ := pgtest.NewStore(t)
		counts, err := st.CountMonitorsByState(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"up": 0, "down": 0, "unknown": 0}, counts, "every state, even with no monitors")

		for i := range 6 {
			newMonitor(t, st, fmt.Sprintf("c%d", i), time.Minute)
		}
		_, err = st.Pool().Exec(ctx, `UPDATE monitors SET state = CASE WHEN id % 3 = 0 THEN 'down' ELSE 'up' END
			WHERE id IN (SELECT id FROM monitors ORDER BY id LIMIT 5)`)
		require.NoError(t, err)
		counts, err = st.CountMonitorsByState(ctx)
		require.NoError(t, err)
		var down int64
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM monitors WHERE state = 'down'`).Scan(&down))
		require.Equal(t, map[string]int64{"up": 5 - down, "down": down, "unknown": 1}, counts)
	})
}
