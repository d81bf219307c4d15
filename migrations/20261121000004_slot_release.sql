-- Whether a booking blocks its time slot is derived, not written: an ACCEPTED
-- REQUESTED booking holds its slot until its session is cancelled (which
-- stamps slot_released_at). No code path can forget or forge it, so the
-- exclusion constraints cover every ACCEPTED booking that should block time.
ALTER TABLE bookings
    DROP CONSTRAINT bookings_mentor_no_overlap,
    DROP CONSTRAINT bookings_mentee_no_overlap,
    DROP CONSTRAINT bookings_holds_slot_check;
ALTER TABLE bookings DROP COLUMN holds_slot;
ALTER TABLE bookings ADD COLUMN slot_released_at timestamptz;
ALTER TABLE bookings ADD COLUMN holds_slot boolean NOT NULL
    GENERATED ALWAYS AS (status = 'ACCEPTED' AND origin = 'REQUESTED' AND slot_released_at IS NULL) STORED;
ALTER TABLE bookings
    ADD CONSTRAINT bookings_mentor_no_overlap EXCLUDE USING gist (
        mentor_id WITH =, tstzrange(start_time, end_time) WITH &&
    ) WHERE (holds_slot),
    ADD CONSTRAINT bookings_mentee_no_overlap EXCLUDE USING gist (
        mentee_id WITH =, tstzrange(start_time, end_time) WITH &&
    ) WHERE (holds_slot);
