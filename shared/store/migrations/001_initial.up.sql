-- Monitors: what to check, when, and what was last seen. The scheduling
-- columns are the hot part: the ticker claims rows by next_check_at and the
-- results service moves it forward after every outcome.
CREATE TABLE monitors (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL UNIQUE,
    kind             text        NOT NULL CHECK (kind IN ('http', 'tcp')),
    target           text        NOT NULL,
    settings         jsonb       NOT NULL DEFAULT '{}',
    region           text        NOT NULL DEFAULT 'default',
    interval_seconds integer     NOT NULL CHECK (interval_seconds >= 1),
    timeout_ms       integer     NOT NULL CHECK (timeout_ms > 0),
    enabled          boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),

    -- due_at is the slot the next check is for; next_check_at is when the
    -- ticker may claim the monitor: due_at, or the end of the lease of a
    -- dispatch that is in flight. attempt counts dispatches of due_at.
    due_at           timestamptz NOT NULL,
    next_check_at    timestamptz NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,

    state            text        NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'down')),
    state_changed_at timestamptz,
    last_due_at      timestamptz,
    last_checked_at  timestamptz,
    last_latency_ms  double precision,
    last_status_code integer,
    last_error       text
) WITH (fillfactor = 80);

-- The ticker's claim: due, enabled monitors of one region, oldest first.
CREATE INDEX monitors_due ON monitors (region, next_check_at) WHERE enabled;

-- Every stored outcome, one row per (monitor, slot): the primary key is what
-- makes a redelivered outcome a no-op. Partitioned by slot time so retention
-- drops whole partitions.
CREATE TABLE check_results (
    monitor_id  bigint           NOT NULL,
    due_at      timestamptz      NOT NULL,
    region      text             NOT NULL,
    attempt     integer          NOT NULL,
    started_at  timestamptz      NOT NULL,
    checked_at  timestamptz      NOT NULL,
    stored_at   timestamptz      NOT NULL DEFAULT now(),
    up          boolean          NOT NULL,
    latency_ms  double precision NOT NULL,
    status_code integer,
    error       text             NOT NULL DEFAULT '',
    PRIMARY KEY (monitor_id, due_at)
) PARTITION BY RANGE (due_at);

-- Catches rows outside the daily partitions made ahead of time, so no
-- outcome is ever refused for want of a partition.
CREATE TABLE check_results_default PARTITION OF check_results DEFAULT;

-- Slots that were due but not checked, and why. slots > 1 records a run of
-- consecutive slots that were coalesced into one check.
CREATE TABLE skipped_slots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    monitor_id  bigint      NOT NULL,
    region      text        NOT NULL,
    due_at      timestamptz NOT NULL,
    slots       integer     NOT NULL DEFAULT 1 CHECK (slots >= 1),
    reason      text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
-- One record per (monitor, slot, reason): recording the same skip twice,
-- as a redelivered message would, is a no-op.
CREATE UNIQUE INDEX skipped_slots_once ON skipped_slots (monitor_id, due_at, reason);
CREATE INDEX skipped_slots_recorded ON skipped_slots (recorded_at);
