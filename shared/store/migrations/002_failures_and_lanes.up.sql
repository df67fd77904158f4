-- A failing monitor is re-checked on the priority lane, every
-- retry_interval_seconds when that is set (NULL: its normal interval).
ALTER TABLE monitors
    ADD COLUMN retry_interval_seconds integer CHECK (retry_interval_seconds >= 1),
    ADD COLUMN lane text NOT NULL DEFAULT 'scheduled' CHECK (lane IN ('scheduled', 'priority')),
    -- A manual check waiting for the ticker to dispatch it.
    ADD COLUMN check_requested_at timestamptz;

CREATE INDEX monitors_check_requested ON monitors (region, check_requested_at)
    WHERE check_requested_at IS NOT NULL;

-- Manual checks are stored like any other but do not move the schedule.
ALTER TABLE check_results ADD COLUMN manual boolean NOT NULL DEFAULT false;
-- Cheap range scans by store time, for throughput in the health report.
CREATE INDEX check_results_stored ON check_results USING brin (stored_at);

-- failed: the slot was due and dispatched but produced no outcome (max
-- deliveries, expiry, a malformed message); the other skips are decisions
-- (coalesced, monitor deleted or paused).
ALTER TABLE skipped_slots ADD COLUMN failed boolean NOT NULL DEFAULT false;
CREATE INDEX skipped_slots_failed ON skipped_slots (recorded_at) WHERE failed;

-- Messages that could not be understood, terminated so they block nothing
-- and kept here so nothing vanishes unexplained.
CREATE TABLE bad_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text        NOT NULL,
    subject     text        NOT NULL,
    seq         bigint,
    reason      text        NOT NULL,
    data        bytea,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bad_messages_recorded ON bad_messages (recorded_at);
