-- Watching (SPEC §4.5).
--
-- The feed of all events is ordered by (txid, id): txid is the inserting
-- transaction's id. A reader only delivers events of transactions older than
-- its snapshot's xmin, i.e. transactions that have all finished, so nothing
-- can later commit "behind" a delivered cursor: resuming loses and repeats
-- nothing. Per-session streams use seq, which the session row lock already
-- makes commit-ordered.
ALTER TABLE session_events
    ADD COLUMN txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX session_events_feed_idx ON session_events (txid, id);

-- A small hint per committed event: "<session_id>:<seq>". Content is always
-- read from the table; NOTIFY is delivered only on commit and may be lost
-- (listener reconnects), which the watchers' backstop covers.
CREATE FUNCTION notify_session_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('session_events', NEW.session_id::text || ':' || NEW.seq::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER session_events_notify AFTER INSERT ON session_events
    FOR EACH ROW EXECUTE FUNCTION notify_session_event();
