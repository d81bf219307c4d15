-- Rescheduling, session notes and metadata, booking event kinds (issue 24).
-- Additive in schema, but not in meaning: a replica of the previous release
-- would accept a mentee's reschedule request as a plain booking, send a
-- reschedule as booking.accepted, and fail to read NOTES_UPDATED events.
-- Upgrade every replica together (docs/OPERATIONS.md, "Upgrading").

-- A rescheduled booking and the one that replaced it link both ways. A
-- mentee's request to move an ACCEPTED booking is a DRAFT whose
-- rescheduled_from names it; one pending request per booking.
ALTER TABLE bookings
    ADD COLUMN rescheduled_from uuid REFERENCES bookings (id) ON DELETE SET NULL,
    ADD COLUMN rescheduled_to   uuid REFERENCES bookings (id) ON DELETE SET NULL;
CREATE UNIQUE INDEX bookings_one_pending_reschedule ON bookings (rescheduled_from) WHERE status = 'DRAFT';
-- For the foreign keys' ON DELETE (the retention purge deletes bookings).
CREATE INDEX bookings_rescheduled_from_idx ON bookings (rescheduled_from) WHERE rescheduled_from IS NOT NULL;
CREATE INDEX bookings_rescheduled_to_idx ON bookings (rescheduled_to) WHERE rescheduled_to IS NOT NULL;

-- Booking events were status changes only; a reschedule or a DRAFT's new
-- time is not one. Old rows are status changes.
ALTER TABLE booking_events
    ADD COLUMN kind    text  NOT NULL DEFAULT 'STATUS_CHANGED'
        CONSTRAINT booking_events_kind_check CHECK (kind IN ('STATUS_CHANGED', 'RESCHEDULED', 'TIME_CHANGED')),
    ADD COLUMN details jsonb NOT NULL DEFAULT '{}';

-- The booking event kinds a webhook subscription wants besides status
-- changes (RESCHEDULED: booking.rescheduled).
ALTER TABLE webhooks ADD COLUMN booking_event_kinds text[] NOT NULL DEFAULT '{}';

-- Sessions: the session a reschedule replaced and the one replacing it
-- (checked at commit: the old session is cancelled, naming its successor,
-- before the successor is inserted);
-- free-text notes and a metadata object, changed by UpdateSessionNotes.
ALTER TABLE sessions
    ADD COLUMN rescheduled_from uuid REFERENCES sessions (id) ON DELETE SET NULL,
    ADD COLUMN rescheduled_to   uuid REFERENCES sessions (id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED,
    ADD COLUMN notes    text  NOT NULL DEFAULT '' CONSTRAINT sessions_notes_length_check CHECK (char_length(notes) <= 10000),
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
CREATE INDEX sessions_rescheduled_from_idx ON sessions (rescheduled_from) WHERE rescheduled_from IS NOT NULL;
CREATE INDEX sessions_rescheduled_to_idx ON sessions (rescheduled_to) WHERE rescheduled_to IS NOT NULL;

ALTER TABLE session_events DROP CONSTRAINT session_events_type_check;
ALTER TABLE session_events ADD CONSTRAINT session_events_type_check
    CHECK (type IN ('CREATED', 'STATUS_CHANGED', 'STAGE_CHANGED', 'CONFIG_UPDATED', 'MENTOR_ASSIGNED',
                    'CHECKED_IN', 'BLOCKER_REPORTED', 'CHECK_IN_MISSED', 'ESCALATED', 'NOTES_UPDATED'));
