-- Retention (SPEC §4.4): the purge finds bookings that never got a session
-- by their last change, without scanning the table.
CREATE INDEX bookings_closed_idx ON bookings (updated_at) WHERE status IN ('DECLINED', 'CANCELLED');
