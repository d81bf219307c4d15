-- Write transactions no longer NOTIFY (issue 10).
--
-- PostgreSQL takes one cluster-wide lock at the commit of every transaction
-- that notified and holds it through the WAL flush, so a NOTIFY per write
-- serialised every write in the cluster. Each replica now hands its own
-- committed events to its watchers directly and tells the other replicas
-- with one batched NOTIFY every few milliseconds, sent outside any write
-- transaction (src/watch/relay.rs).
DROP TRIGGER session_events_notify ON session_events;
DROP FUNCTION notify_session_event();
