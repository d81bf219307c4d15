-- Assignment history (SPEC §4.3): one row per mentor assignment of a session,
-- the first one (from its booking, the request, the listing or automatic
-- assignment) included. Reassignments add rows; nothing is updated.
CREATE TABLE mentor_assignments (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id         uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    mentor_id          uuid        NOT NULL REFERENCES mentors (id),
    previous_mentor_id uuid        REFERENCES mentors (id),
    -- booking, request, listing, workload_balanced, skill_matched, round_robin, reassigned.
    strategy           text        NOT NULL CHECK (strategy IN ('booking', 'request', 'listing', 'workload_balanced',
                                                                 'skill_matched', 'round_robin', 'reassigned')),
    reason             text        NOT NULL DEFAULT '',
    actor_kind         text        NOT NULL CHECK (actor_kind IN ('MENTEE', 'MENTOR', 'COORDINATOR', 'SERVICE', 'SYSTEM')),
    actor_id           text        NOT NULL DEFAULT '',
    assigned_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mentor_assignments_session_idx ON mentor_assignments (session_id, id);

-- Sessions from before the history: their first assignment came with their booking.
INSERT INTO mentor_assignments (session_id, mentor_id, strategy, actor_kind, assigned_at)
SELECT id, mentor_id, 'booking', 'SYSTEM', created_at FROM sessions;
