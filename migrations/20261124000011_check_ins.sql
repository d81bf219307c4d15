-- Check-ins and escalation (SPEC §4.6). While a session is ACTIVE a check-in
-- is due every check_in_interval of active time: at check_in_anchor_us +
-- interval × (check_ins_missed + 1) of it. check_in_due is that moment on the
-- clock, kept by every save (NULL unless ACTIVE), in a column of its own so
-- the system timeouts' `deadline` keeps its meaning for every release.
ALTER TABLE sessions
    ADD COLUMN check_in_anchor_us bigint NOT NULL DEFAULT 0,
    ADD COLUMN check_ins_missed integer NOT NULL DEFAULT 0 CHECK (check_ins_missed >= 0),
    ADD COLUMN escalation_level integer NOT NULL DEFAULT 0 CHECK (escalation_level BETWEEN 0 AND 3),
    ADD COLUMN check_in_due timestamptz;

CREATE INDEX sessions_check_in_due_idx ON sessions (check_in_due) WHERE check_in_due IS NOT NULL;

-- Sessions already ACTIVE start their check-ins now: the first is due one
-- interval from here, not at once.
UPDATE sessions
   SET check_in_anchor_us = active_banked_us + (extract(epoch FROM now() - active_since) * 1000000)::bigint,
       check_in_due = now() + make_interval(secs => (config->>'check_in_interval_secs')::double precision)
 WHERE status = 'ACTIVE' AND active_since IS NOT NULL;

ALTER TABLE session_events DROP CONSTRAINT session_events_type_check;
ALTER TABLE session_events ADD CONSTRAINT session_events_type_check
    CHECK (type IN ('CREATED', 'STATUS_CHANGED', 'STAGE_CHANGED', 'CONFIG_UPDATED', 'MENTOR_ASSIGNED',
                    'CHECKED_IN', 'BLOCKER_REPORTED', 'CHECK_IN_MISSED', 'ESCALATED'));
