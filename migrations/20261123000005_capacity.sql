-- Capacity (SPEC §4.3). A session holds a *concurrency slot* while ACTIVE or
-- PAUSED (not to be confused with a booking's *time slot*).
--
-- The system-wide limit is a pool of rows, one per concurrency slot: a
-- session takes a free row with FOR UPDATE SKIP LOCKED and gives it back when
-- it leaves ACTIVE/PAUSED. Concurrent admissions take different rows, so the
-- system limit is exact on any number of replicas without one hot row. The
-- service keeps the pool at the configured size when it starts.
CREATE TABLE system_slots (
    slot       integer PRIMARY KEY CHECK (slot > 0),
    -- Deferred: a new session takes its slot in the transaction that inserts it.
    session_id uuid CONSTRAINT system_slots_session_key UNIQUE
               REFERENCES sessions (id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED
);

-- Free slots, so taking one reads no occupied rows however large the pool.
CREATE INDEX system_slots_free_idx ON system_slots (slot) WHERE session_id IS NULL;

-- The queue, in order.
CREATE INDEX sessions_queue_idx ON sessions (queued_at, id) WHERE status = 'QUEUED';
-- Observed durations for queue estimates: recently ended sessions.
CREATE INDEX sessions_ended_idx ON sessions (ended_at) WHERE ended_at IS NOT NULL;
-- The p95 queue wait of GetQueueStatus: sessions queued recently.
CREATE INDEX sessions_queued_at_idx ON sessions (queued_at) WHERE queued_at IS NOT NULL;
