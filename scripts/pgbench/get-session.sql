-- GetSession on client :client_id's own session: the one statement the
-- service runs (outside a transaction) for a session that is not QUEUED.
-- The service reads the calls that arrive together with one run of it
-- (store::reads); pgbench runs it once per call, with one id.
\set n :client_id + 1
SELECT sessions.id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status, stage, config,
       queued_at, started_at, ended_at, active_banked_us, active_since, paused_at, report, failure,
       cancel_reason, last_seq, version, created_at, updated_at, check_in_anchor_us, check_ins_missed,
       escalation_level, notes, metadata, rescheduled_from, rescheduled_to,
       (SELECT display_name FROM mentees WHERE id = sessions.mentee_id) AS mentee_name,
       (SELECT display_name FROM mentors WHERE id = sessions.mentor_id) AS mentor_name,
       (SELECT title FROM listings WHERE id = sessions.listing_id) AS listing_title
FROM sessions WHERE id = ANY(ARRAY[(SELECT id FROM bench_sessions WHERE n = :n)]);
