package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

const partitionPrefix = "check_results_p"

// EnsurePartitions creates the daily result partitions from the day of from
// through days days ahead, so outcomes land in a partition that retention
// can drop whole.
func (s *Store) EnsurePartitions(ctx context.Context, from time.Time, days int) error {
	day := from.UTC().Truncate(24 * time.Hour)
	for i := 0; i <= days; i++ {
		start := day.AddDate(0, 0, i)
		end := start.AddDate(0, 0, 1)
		name := partitionPrefix + start.Format("20060102")
		sql := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF check_results FOR VALUES FROM ('%s') TO ('%s')`,
			pgx.Identifier{name}.Sanitize(), start.Format(time.RFC3339), end.Format(time.RFC3339))
		if _, err := s.pool.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create result partition %s: %w", name, err)
		}
	}
	return nil
}

// DropPartitionsBefore drops the daily result partitions that end at or
// before cutoff and returns their names. Dropping a partition is how
// retention works: no row-by-row delete, no bloat.
func (s *Store) DropPartitionsBefore(ctx context.Context, cutoff time.Time) ([]string, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT c.relname FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'check_results'::regclass AND c.relname LIKE $1`, partitionPrefix+"%")
	if err != nil {
		return nil, fmt.Errorf("list result partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list result partitions: %w", err)
	}
	var dropped []string
	for _, name := range names {
		day, err := time.Parse("20060102", strings.TrimPrefix(name, partitionPrefix))
		if err != nil || day.AddDate(0, 0, 1).After(cutoff) {
			continue
		}
		if _, err := s.pool.Exec(ctx, `DROP TABLE `+pgx.Identifier{name}.Sanitize()); err != nil {
			return dropped, fmt.Errorf("drop result partition %s: %w", name, err)
		}
		dropped = append(dropped, name)
	}
	return dropped, nil
}
