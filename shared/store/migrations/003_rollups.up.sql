-- Hourly rollups of check results, so uptime percentages and latency
-- summaries never scan raw rows. Raw rows are kept only for the retention
-- period; rollups are small (one row per monitor and hour) and kept longer.
CREATE TABLE check_rollups_hourly (
    monitor_id     bigint           NOT NULL,
    hour           timestamptz      NOT NULL,
    checks         integer          NOT NULL,
    up_checks      integer          NOT NULL,
    latency_ms_sum double precision NOT NULL,
    latency_ms_max double precision NOT NULL,
    PRIMARY KEY (monitor_id, hour)
);
CREATE INDEX check_rollups_hourly_hour ON check_rollups_hourly (hour);

-- The newest hour the rollup job has completed, so it knows where to pick up.
CREATE TABLE rollup_progress (
    name       text PRIMARY KEY,
    rolled_to  timestamptz NOT NULL
);

-- The dashboard lists down monitors first; with a fleet mostly up, this
-- keeps that listing from reading every monitor.
CREATE INDEX monitors_down ON monitors (id) WHERE state = 'down';
