-- Lists and exports filtered by status alone (SPEC §4.4): a page of a rare
-- status (QUEUED, PAUSED) reads only its own rows, in either order, and an
-- exact total_size counts them from the index. A status filter combined
-- with a participant keeps using that participant's index (few rows each).
CREATE INDEX sessions_status_created_idx ON sessions (status, created_at DESC, id DESC);
CREATE INDEX sessions_status_start_idx ON sessions (status, start_time DESC, id DESC);
CREATE INDEX bookings_status_created_idx ON bookings (status, created_at DESC, id DESC);
