-- Foundation schema: directory, bookings, sessions and their audit logs.
-- The database is the last line of defence for every invariant of SPEC §2-§3;
-- each constraint is named so the store can map a violation to a precise error.

-- btree_gist lets an exclusion constraint combine `uuid =` with range overlap.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE mentees (
    id           uuid        PRIMARY KEY,
    display_name text        NOT NULL CONSTRAINT mentees_display_name_check
                             CHECK (char_length(display_name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mentors (
    id                      uuid        PRIMARY KEY,
    user_id                 uuid        NOT NULL CONSTRAINT mentors_user_id_key UNIQUE,
    display_name            text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    skill_areas             text[]      NOT NULL DEFAULT '{}',
    -- NULL: the configured default applies.
    max_concurrent_sessions integer     CHECK (max_concurrent_sessions > 0),
    accepting_sessions      boolean     NOT NULL DEFAULT true,
    timezone                text        NOT NULL,
    -- Last time auto-assignment picked this mentor (tie-break for workload_balanced).
    last_assigned_at        timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mentors_skill_areas_idx ON mentors USING gin (skill_areas);

-- Weekly windows in the mentor's time zone, as minutes after local midnight.
CREATE TABLE mentor_availability (
    mentor_id    uuid     NOT NULL REFERENCES mentors (id) ON DELETE CASCADE,
    day_of_week  smallint NOT NULL CHECK (day_of_week BETWEEN 1 AND 7),
    start_minute smallint NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   smallint NOT NULL CHECK (end_minute BETWEEN 1 AND 1440),
    CONSTRAINT mentor_availability_order_check CHECK (start_minute < end_minute),
    PRIMARY KEY (mentor_id, day_of_week, start_minute)
);

CREATE TABLE listings (
    id         uuid        PRIMARY KEY,
    mentor_id  uuid        REFERENCES mentors (id),
    title      text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    skill_area text        NOT NULL CHECK (char_length(skill_area) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX listings_mentor_idx ON listings (mentor_id, id);

CREATE TABLE bookings (
    id         uuid        PRIMARY KEY,
    listing_id uuid        NOT NULL REFERENCES listings (id),
    mentor_id  uuid        NOT NULL REFERENCES mentors (id),
    mentee_id  uuid        NOT NULL REFERENCES mentees (id),
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    status     text        NOT NULL CONSTRAINT bookings_status_check
                           CHECK (status IN ('DRAFT', 'ACCEPTED', 'DECLINED', 'CANCELLED')),
    origin     text        NOT NULL CONSTRAINT bookings_origin_check
                           CHECK (origin IN ('REQUESTED', 'ON_DEMAND')),
    notes      text        NOT NULL DEFAULT '',
    reason     text        NOT NULL DEFAULT '',
    -- True while this booking blocks its time slot for mentor and mentee: an
    -- ACCEPTED REQUESTED booking. On-demand bookings are governed by capacity
    -- limits instead, so they never hold a slot.
    holds_slot boolean     NOT NULL DEFAULT false,
    version    bigint      NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookings_time_order_check CHECK (start_time < end_time),
    CONSTRAINT bookings_holds_slot_check CHECK (NOT holds_slot OR status = 'ACCEPTED'),
    -- Target of the sessions' composite foreign key.
    CONSTRAINT bookings_session_key UNIQUE (id, status, listing_id, mentee_id, start_time, end_time),
    CONSTRAINT bookings_mentor_no_overlap EXCLUDE USING gist (
        mentor_id WITH =, tstzrange(start_time, end_time) WITH &&
    ) WHERE (holds_slot),
    CONSTRAINT bookings_mentee_no_overlap EXCLUDE USING gist (
        mentee_id WITH =, tstzrange(start_time, end_time) WITH &&
    ) WHERE (holds_slot)
);
CREATE INDEX bookings_mentor_idx ON bookings (mentor_id, created_at DESC, id DESC);
CREATE INDEX bookings_mentee_idx ON bookings (mentee_id, created_at DESC, id DESC);
CREATE INDEX bookings_listing_idx ON bookings (listing_id, created_at DESC, id DESC);
CREATE INDEX bookings_created_idx ON bookings (created_at DESC, id DESC);

-- Audit of every booking change: who, why, when.
CREATE TABLE booking_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id  uuid        NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    from_status text        CHECK (from_status IN ('DRAFT', 'ACCEPTED', 'DECLINED', 'CANCELLED')),
    to_status   text        NOT NULL CHECK (to_status IN ('DRAFT', 'ACCEPTED', 'DECLINED', 'CANCELLED')),
    actor_kind  text        NOT NULL CHECK (actor_kind IN ('MENTEE', 'MENTOR', 'COORDINATOR', 'SERVICE', 'SYSTEM')),
    actor_id    text        NOT NULL DEFAULT '',
    reason      text        NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX booking_events_booking_idx ON booking_events (booking_id, id);

CREATE TABLE sessions (
    id             uuid        PRIMARY KEY,
    booking_id     uuid        NOT NULL CONSTRAINT sessions_booking_id_key UNIQUE,
    -- Always 'ACCEPTED': part of the composite key below, so a session can only
    -- reference an ACCEPTED booking, and that booking can never leave ACCEPTED.
    booking_status text        NOT NULL DEFAULT 'ACCEPTED' CHECK (booking_status = 'ACCEPTED'),
    listing_id     uuid        NOT NULL,
    mentor_id      uuid        NOT NULL REFERENCES mentors (id),
    mentee_id      uuid        NOT NULL,
    start_time     timestamptz NOT NULL,
    end_time       timestamptz NOT NULL,
    status         text        NOT NULL CONSTRAINT sessions_status_check
                               CHECK (status IN ('SCHEDULED', 'QUEUED', 'ACTIVE', 'PAUSED',
                                                 'COMPLETED', 'FAILED', 'CANCELLED')),
    stage          text        CONSTRAINT sessions_stage_check CHECK (stage ~ '^[a-z0-9_.-]{1,64}$'),
    config         jsonb       NOT NULL,
    queued_at      timestamptz,
    started_at     timestamptz,
    ended_at       timestamptz,
    -- Active time (microseconds) banked before the current ACTIVE stretch, which began at active_since.
    active_banked_us bigint    NOT NULL DEFAULT 0 CHECK (active_banked_us >= 0),
    active_since   timestamptz,
    paused_at      timestamptz,
    report         jsonb,
    failure        jsonb,
    cancel_reason  text        NOT NULL DEFAULT '',
    -- Next system deadline (timeouts) and what fires then; NULL when none.
    deadline       timestamptz,
    deadline_kind  text        CHECK (deadline_kind IN ('TIMEOUT', 'PAUSE_TIMEOUT', 'QUEUE_TIMEOUT', 'NO_SHOW')),
    last_seq       bigint      NOT NULL DEFAULT 0,
    version        bigint      NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Exactly the booking's listing, mentee and times, and the booking is ACCEPTED.
    CONSTRAINT sessions_booking_fkey FOREIGN KEY (booking_id, booking_status, listing_id, mentee_id, start_time, end_time)
        REFERENCES bookings (id, status, listing_id, mentee_id, start_time, end_time),
    CONSTRAINT sessions_listing_fkey FOREIGN KEY (listing_id) REFERENCES listings (id),
    CONSTRAINT sessions_mentee_fkey FOREIGN KEY (mentee_id) REFERENCES mentees (id),
    CONSTRAINT sessions_active_since_check CHECK ((status = 'ACTIVE') = (active_since IS NOT NULL)),
    CONSTRAINT sessions_deadline_check CHECK ((deadline IS NULL) = (deadline_kind IS NULL))
);
CREATE INDEX sessions_created_idx ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_start_idx ON sessions (start_time DESC, id DESC);
CREATE INDEX sessions_mentor_idx ON sessions (mentor_id, created_at DESC, id DESC);
CREATE INDEX sessions_mentee_idx ON sessions (mentee_id, created_at DESC, id DESC);
CREATE INDEX sessions_listing_idx ON sessions (listing_id, created_at DESC, id DESC);
-- Capacity checks count slot-holding sessions per mentor and mentee.
CREATE INDEX sessions_slot_mentor_idx ON sessions (mentor_id) WHERE status IN ('ACTIVE', 'PAUSED');
CREATE INDEX sessions_slot_mentee_idx ON sessions (mentee_id) WHERE status IN ('ACTIVE', 'PAUSED');
-- The sweeper reads the next deadline from here instead of scanning.
CREATE INDEX sessions_deadline_idx ON sessions (deadline) WHERE deadline IS NOT NULL;

-- Append-only audit log: one row per change, gapless seq per session.
CREATE TABLE session_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    session_id  uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         bigint      NOT NULL CHECK (seq > 0),
    type        text        NOT NULL CHECK (type IN ('CREATED', 'STATUS_CHANGED', 'STAGE_CHANGED',
                                                     'CONFIG_UPDATED', 'MENTOR_ASSIGNED')),
    from_status text,
    to_status   text,
    from_stage  text,
    to_stage    text,
    actor_kind  text        NOT NULL CHECK (actor_kind IN ('MENTEE', 'MENTOR', 'COORDINATOR', 'SERVICE', 'SYSTEM')),
    actor_id    text        NOT NULL DEFAULT '',
    reason      text        NOT NULL DEFAULT '',
    details     jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);
CREATE UNIQUE INDEX session_events_id_idx ON session_events (id);
