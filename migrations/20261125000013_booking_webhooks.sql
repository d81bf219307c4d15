-- Booking events for webhook subscriptions (SPEC §4.6: "committed session
-- and booking events"). Additive only: a replica of the previous release
-- keeps running on this schema (it neither reads nor writes what is new).

-- The booking events' feed, ordered like the session events' by
-- (txid, id). Rows from before this migration keep a NULL txid and never
-- enter the feed: the column is added without a default (no table
-- rewrite), and the default applies to new rows only.
ALTER TABLE booking_events ADD COLUMN txid bigint;
ALTER TABLE booking_events ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX booking_events_feed_idx ON booking_events (txid, id);

-- Where the dispatcher is in the booking feed (0, 0: at its start, which
-- holds only events committed after this migration).
ALTER TABLE webhook_cursor
    ADD COLUMN booking_txid     bigint NOT NULL DEFAULT 0,
    ADD COLUMN booking_event_id bigint NOT NULL DEFAULT 0;

-- The booking events a subscription wants, by the status each moves its
-- booking to (DRAFT: a new booking). With event_types: both empty, every
-- session and booking event; otherwise exactly the ones named.
ALTER TABLE webhooks ADD COLUMN booking_event_types text[] NOT NULL DEFAULT '{}';

-- A booking event's delivery: session_id holds the booking's id (ids are
-- UUIDv7 and never shared between a booking and a session), seq its rank
-- in the booking's log, event_type the status it moved to, and event_id
-- the booking_events row (the claim's order check reads it). The pair
-- (webhook, booking) is ordered exactly like (webhook, session).
ALTER TABLE webhook_deliveries
    ADD COLUMN subject  text   NOT NULL DEFAULT 'SESSION' CHECK (subject IN ('SESSION', 'BOOKING')),
    ADD COLUMN event_id bigint;
