-- The census behind the metrics of sessions by status and of the queue: one
-- row, recounted by one replica per census period (an index-only count, never
-- a count per scrape, never a counter row every write updates), read by every
-- replica.
CREATE TABLE census (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- NULL until the first count.
    counted_at timestamptz,
    -- {"ACTIVE": 3, ...}: every status with sessions.
    sessions jsonb NOT NULL,
    queued bigint NOT NULL,
    oldest_queued_at timestamptz
);
INSERT INTO census (sessions, queued) VALUES ('{}', 0);
