-- PauseSession then ResumeSession on client :client_id's own session
-- (bench_sessions, filled by `loadgen --scenario prepare`): the statements
-- the service runs for each transition, in its transaction (BEGIN; lock the
-- row; save it with its event; COMMIT), with the values it binds. Two
-- transactions per run of the script: tps x 2 = transitions/s.
\set n :client_id + 1
BEGIN;
SELECT sessions.id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status, stage, config,
       queued_at, started_at, ended_at, active_banked_us, active_since, paused_at, report, failure,
       cancel_reason, last_seq, version, created_at, updated_at, check_in_anchor_us, check_ins_missed,
       escalation_level, notes, metadata, rescheduled_from, rescheduled_to,
       (SELECT display_name FROM mentees WHERE id = sessions.mentee_id) AS mentee_name,
       (SELECT display_name FROM mentors WHERE id = sessions.mentor_id) AS mentor_name,
       (SELECT title FROM listings WHERE id = sessions.listing_id) AS listing_title
FROM sessions WHERE id = (SELECT id FROM bench_sessions WHERE n = :n) FOR UPDATE OF sessions;
WITH saved AS (
    UPDATE sessions SET status = 'PAUSED', stage = NULL, config = '{"template_id": "", "notifications": {"email": false, "slack": true, "recipients": [], "notify_on_blocker": true, "notify_on_completion": true, "notify_on_escalation": true, "notify_on_state_change": true}, "allowed_stages": [], "custom_settings": {}, "escalation_policy": "PROGRESSIVE", "max_duration_secs": 28800, "quality_tier_override": null, "check_in_interval_secs": 1800}',
        queued_at = NULL, started_at = started_at, ended_at = NULL, active_banked_us = active_banked_us,
        active_since = NULL, paused_at = now(), report = NULL, failure = NULL, cancel_reason = '',
        deadline = now() + interval '24 hours', deadline_kind = 'PAUSE_TIMEOUT', mentor_id = mentor_id,
        check_in_anchor_us = check_in_anchor_us, check_ins_missed = 0, escalation_level = 0, check_in_due = NULL,
        notes = notes, metadata = metadata, rescheduled_to = rescheduled_to, last_seq = last_seq + 1, version = version + 1, updated_at = now()
    WHERE id = (SELECT id FROM bench_sessions WHERE n = :n)
    RETURNING id, status, stage, last_seq, version, updated_at
), event AS (
    INSERT INTO session_events (session_id, seq, type, from_status, to_status, from_stage,
                                to_stage, actor_kind, actor_id, reason, details)
    SELECT id, last_seq, 'STATUS_CHANGED', 'ACTIVE', status, NULL, stage, 'COORDINATOR',
           'fd441f0f-1a6c-4267-8260-bd1fe7ac8f38', '', '{"command": "PauseSession"}' FROM saved
    RETURNING occurred_at, txid, id
)
SELECT saved.last_seq, saved.version, saved.updated_at, event.occurred_at, event.txid, event.id
FROM saved, event;
COMMIT;
BEGIN;
SELECT sessions.id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status, stage, config,
       queued_at, started_at, ended_at, active_banked_us, active_since, paused_at, report, failure,
       cancel_reason, last_seq, version, created_at, updated_at, check_in_anchor_us, check_ins_missed,
       escalation_level, notes, metadata, rescheduled_from, rescheduled_to,
       (SELECT display_name FROM mentees WHERE id = sessions.mentee_id) AS mentee_name,
       (SELECT display_name FROM mentors WHERE id = sessions.mentor_id) AS mentor_name,
       (SELECT title FROM listings WHERE id = sessions.listing_id) AS listing_title
FROM sessions WHERE id = (SELECT id FROM bench_sessions WHERE n = :n) FOR UPDATE OF sessions;
WITH saved AS (
    UPDATE sessions SET status = 'ACTIVE', stage = NULL, config = '{"template_id": "", "notifications": {"email": false, "slack": true, "recipients": [], "notify_on_blocker": true, "notify_on_completion": true, "notify_on_escalation": true, "notify_on_state_change": true}, "allowed_stages": [], "custom_settings": {}, "escalation_policy": "PROGRESSIVE", "max_duration_secs": 28800, "quality_tier_override": null, "check_in_interval_secs": 1800}',
        queued_at = NULL, started_at = started_at, ended_at = NULL, active_banked_us = active_banked_us,
        active_since = now(), paused_at = NULL, report = NULL, failure = NULL, cancel_reason = '',
        deadline = now() + interval '8 hours', deadline_kind = 'TIMEOUT', mentor_id = mentor_id,
        check_in_anchor_us = check_in_anchor_us, check_ins_missed = 0, escalation_level = 0,
        check_in_due = now() + interval '30 minutes',
        notes = notes, metadata = metadata, rescheduled_to = rescheduled_to, last_seq = last_seq + 1, version = version + 1, updated_at = now()
    WHERE id = (SELECT id FROM bench_sessions WHERE n = :n)
    RETURNING id, status, stage, last_seq, version, updated_at
), event AS (
    INSERT INTO session_events (session_id, seq, type, from_status, to_status, from_stage,
                                to_stage, actor_kind, actor_id, reason, details)
    SELECT id, last_seq, 'STATUS_CHANGED', 'PAUSED', status, NULL, stage, 'COORDINATOR',
           'fd441f0f-1a6c-4267-8260-bd1fe7ac8f38', '', '{"command": "ResumeSession"}' FROM saved
    RETURNING occurred_at, txid, id
)
SELECT saved.last_seq, saved.version, saved.updated_at, event.occurred_at, event.txid, event.id
FROM saved, event;
COMMIT;
