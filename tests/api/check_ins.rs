//! Check-ins and escalation (SPEC §4.6): RecordCheckIn, missed check-ins
//! fired by the sweeper (stepped with `sweep`, one real-time test aside), and
//! the escalation level of each policy.

use std::time::Duration;

use chrono::Utc;
use mentorship::grpc::pb;
use pb::SessionEventType as Type;
use tonic::Code;

use crate::helpers::*;

/// An ACTIVE session on demand with `policy`.
async fn active_with(app: &TestApp, w: &World, policy: pb::EscalationPolicy) -> pb::Session {
    let config = pb::SessionConfig {
        escalation_policy: policy as i32,
        ..Default::default()
    };
    let s = on_demand(app, w, Some((config, vec!["escalation_policy"])))
        .await
        .expect("create");
    assert_eq!(s.status(), pb::SessionStatus::Active);
    s
}

/// Makes the next check-in due and steps the sweeper once.
async fn miss(app: &TestApp, id: &str) {
    app.expire_check_in(id).await;
    assert_eq!(app.sweep().await, 1, "one missed check-in fired");
}

/// The events after seq `after`, as (type, details) pairs.
async fn events_after(app: &TestApp, id: &str, after: usize) -> Vec<pb::SessionEvent> {
    event_log(app, id).await.into_iter().skip(after).collect()
}

fn detail(e: &pb::SessionEvent, key: &str) -> Option<f64> {
    use prost_types::value::Kind;
    match e.details.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::NumberValue(n) => Some(*n),
        _ => None,
    }
}

#[tokio::test]
async fn missed_check_ins_escalate_and_a_check_in_starts_over() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let s = active_with(&app, &w, pb::EscalationPolicy::Progressive).await;
    let started = ts_of(&s.started_at);
    assert_eq!(
        ts_of(&s.check_in_due_time),
        started + chrono::Duration::minutes(30),
        "due one check_in_interval of active time after the start"
    );
    assert_eq!((s.missed_check_ins, s.escalation_level), (0, 0));

    // Four misses: the level rises 1, 2, 3 and then stays.
    let mut seen = event_log(&app, &s.id).await.len();
    for (n, level) in [(1, Some(1)), (2, Some(2)), (3, Some(3)), (4, None)] {
        miss(&app, &s.id).await;
        let new = events_after(&app, &s.id, seen).await;
        seen += new.len();
        assert_eq!(new[0].r#type(), Type::CheckInMissed);
        assert_eq!(new[0].actor.as_ref().expect("actor").kind(), pb::ActorKind::System);
        assert_eq!(detail(&new[0], "missed"), Some(f64::from(n)));
        assert_eq!(
            (new[0].from_status(), new[0].to_status()),
            (pb::SessionStatus::Active, pb::SessionStatus::Active)
        );
        match level {
            Some(level) => {
                assert_eq!(new.len(), 2, "a rise is an ESCALATED event");
                assert_eq!(new[1].r#type(), Type::Escalated);
                assert_eq!(new[1].actor.as_ref().expect("actor").kind(), pb::ActorKind::System);
                assert_eq!(detail(&new[1], "level"), Some(f64::from(level)));
            }
            None => assert_eq!(new.len(), 1, "no rise past 3, no ESCALATED"),
        }
        let now = get_session(&app, &s.id).await;
        assert_eq!((now.missed_check_ins, now.escalation_level), (n, level.unwrap_or(3)));
    }

    // A blocker reported by the mentee is a check-in: count and level reset.
    let mentee = app.as_(&w.mentee_token());
    let before = Utc::now();
    let checked = mentee
        .record_check_in(&s.id, "stuck on the borrow checker", true)
        .await
        .expect("check in");
    assert_eq!((checked.missed_check_ins, checked.escalation_level), (0, 0));
    let due = ts_of(&checked.check_in_due_time);
    assert!(
        due >= before + chrono::Duration::minutes(30) && due <= Utc::now() + chrono::Duration::minutes(30),
        "the next one is due an interval from now: {due}"
    );
    let new = events_after(&app, &s.id, seen).await;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].r#type(), Type::BlockerReported);
    assert_eq!(new[0].actor.as_ref().expect("actor").kind(), pb::ActorKind::Mentee);
    let note = new[0].details.as_ref().expect("details").fields["note"].clone();
    assert_eq!(
        note.kind,
        Some(prost_types::value::Kind::StringValue(
            "stuck on the borrow checker".into()
        ))
    );
    // Without a blocker, from the mentor: CHECKED_IN.
    let mentor = app.as_(&w.mentor_token());
    mentor.record_check_in(&s.id, "", false).await.expect("check in");
    let last = event_log(&app, &s.id).await.pop().expect("an event");
    assert_eq!(last.r#type(), Type::CheckedIn);
    // The next miss starts from level 0 again.
    miss(&app, &s.id).await;
    assert_eq!(get_session(&app, &s.id).await.escalation_level, 1);
}

#[tokio::test]
async fn each_policy_escalates_as_the_spec_says() {
    let app = spawn_with(1, roomy_rules()).await;
    for (policy, levels) in [
        (pb::EscalationPolicy::Immediate, [3, 3, 3, 3, 3]),
        (pb::EscalationPolicy::Progressive, [1, 2, 3, 3, 3]),
        (pb::EscalationPolicy::Relaxed, [0, 1, 1, 2, 2]),
    ] {
        let w = world(&app).await;
        let s = active_with(&app, &w, policy).await;
        let mut raised = Vec::new();
        for expected in levels {
            miss(&app, &s.id).await;
            let now = get_session(&app, &s.id).await;
            assert_eq!(
                now.escalation_level, expected,
                "{policy:?} after {} misses",
                now.missed_check_ins
            );
            raised = event_log(&app, &s.id)
                .await
                .iter()
                .filter(|e| e.r#type() == Type::Escalated)
                .filter_map(|e| detail(e, "level"))
                .collect();
        }
        let mut rises: Vec<f64> = levels.iter().map(|&l| f64::from(l)).collect();
        rises.dedup();
        rises.retain(|&l| l > 0.0);
        assert_eq!(raised, rises, "{policy:?}: one ESCALATED per rise");
    }
}

#[tokio::test]
async fn paused_time_does_not_count_and_only_active_sessions_check_in() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let c = app.coordinator();
    let s = active_with(&app, &w, pb::EscalationPolicy::Progressive).await;
    let paused = c.pause_session(&s.id, "lunch").await.expect("pause");
    assert_eq!(paused.check_in_due_time, None, "nothing is due while PAUSED");
    let refused = c.record_check_in(&s.id, "", false).await;
    assert_status(refused, Code::FailedPrecondition, "INVALID_TRANSITION");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let used = prost_duration(&paused.active_duration);
    let before = Utc::now();
    let resumed = c.resume_session(&s.id).await.expect("resume");
    let after = Utc::now();
    // Due once the rest of the interval is used, counted from the resume.
    let resumed_at = ts_of(&resumed.check_in_due_time) - (chrono::Duration::minutes(30) - used);
    assert!(
        before - chrono::Duration::milliseconds(1) <= resumed_at && resumed_at <= after,
        "due after the rest of the interval of active time: resumed at {resumed_at}, between {before} and {after}"
    );
    // A terminal session has none, and takes no check-in.
    let done = c.complete_session(&s.id, None).await.expect("complete");
    assert_eq!(done.check_in_due_time, None);
    assert_status(
        c.record_check_in(&s.id, "", false).await,
        Code::FailedPrecondition,
        "INVALID_TRANSITION",
    );
}

fn prost_duration(d: &Option<prost_types::Duration>) -> chrono::Duration {
    let d = d.as_ref().expect("a duration");
    chrono::Duration::seconds(d.seconds) + chrono::Duration::nanoseconds(i64::from(d.nanos))
}

#[tokio::test]
async fn who_may_check_in_and_what_a_bad_request_gets() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let s = active_with(&app, &w, pb::EscalationPolicy::Progressive).await;
    let stranger = app.as_(&token(&["mentee"], uuid::Uuid::new_v4(), None));
    assert_status(
        stranger.record_check_in(&s.id, "", false).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let service = app.as_(&service());
    service
        .record_check_in(&s.id, "from the CI bot", false)
        .await
        .expect("service");
    let before = app.stored_counts().await;
    let too_long = "x".repeat(4001);
    let refused = service.record_check_in(&s.id, &too_long, false).await;
    let status = assert_status(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["note"]);
    assert_eq!(app.stored_counts().await, before, "nothing stored");
    // A retry with the same request id records one check-in.
    let id = uuid::Uuid::new_v4().to_string();
    let once = service.clone().with_request_id(&id);
    let first = once.record_check_in(&s.id, "once", false).await.expect("first");
    let again = once.record_check_in(&s.id, "once", false).await.expect("retry");
    assert_eq!(first, again);
    let check_ins = event_log(&app, &s.id)
        .await
        .iter()
        .filter(|e| e.r#type() == Type::CheckedIn)
        .count();
    assert_eq!(check_ins, 2, "the service's first one, and this one once");
}

#[tokio::test]
async fn due_check_ins_fire_once_each_with_two_replicas_sweeping_at_once() {
    let app = spawn_with(2, roomy_rules()).await;
    let w = world(&app).await;
    let mut ids = Vec::new();
    for _ in 0..scale(8, 40) {
        ids.push(active_with(&app, &w, pb::EscalationPolicy::Immediate).await.id);
    }
    for id in &ids {
        app.expire_check_in(id).await;
    }
    let sweeps = app
        .replicas
        .iter()
        .map(|r| mentorship::jobs::sweeper::sweep_once(&r.app));
    let fired: usize = futures::future::join_all(sweeps)
        .await
        .into_iter()
        .map(|n| n.expect("sweep"))
        .sum();
    assert_eq!(fired, ids.len(), "every due check-in fired, none twice");
    for id in &ids {
        let log = event_log(&app, id).await;
        let missed = log.iter().filter(|e| e.r#type() == Type::CheckInMissed).count();
        let escalated = log.iter().filter(|e| e.r#type() == Type::Escalated).count();
        assert_eq!((missed, escalated), (1, 1), "{id}");
    }
}

#[tokio::test]
async fn a_missed_check_in_fires_on_its_own() {
    // The one real-time test: a one-second interval, the sweeper running.
    let app = spawn_jobs(1, fast_rules(), Jobs::RealTime).await;
    let w = world(&app).await;
    let config = pb::SessionConfig {
        check_in_interval: Some(seconds(1)),
        ..Default::default()
    };
    let s = on_demand(&app, &w, Some((config, vec!["check_in_interval"])))
        .await
        .expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let missed = loop {
        let log = event_log(&app, &s.id).await;
        if let Some(e) = log.iter().find(|e| e.r#type() == Type::CheckInMissed) {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no missed check-in within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let late = ts_of(&missed.occurred_at) - ts_of(&s.check_in_due_time);
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(2),
        "fired {late} after it was due"
    );
}

#[tokio::test]
async fn a_stale_stored_due_time_is_corrected_not_counted_as_a_miss() {
    // As a replica of an older release leaves it: the stored copy says due,
    // the session's own clocks say not yet.
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let s = active_with(&app, &w, pb::EscalationPolicy::Immediate).await;
    sqlx::query("UPDATE sessions SET check_in_due = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&s.id)
        .execute(&app.pool)
        .await
        .expect("stale copy");
    app.sweep().await;
    let log = event_log(&app, &s.id).await;
    assert!(log.iter().all(|e| e.r#type() != Type::CheckInMissed), "{log:?}");
    let now = get_session(&app, &s.id).await;
    assert_eq!((now.missed_check_ins, now.escalation_level), (0, 0));
    let stored: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT check_in_due FROM sessions WHERE id = $1::uuid")
        .bind(&s.id)
        .fetch_one(&app.pool)
        .await
        .expect("stored");
    assert_eq!(
        stored,
        ts_of(&s.check_in_due_time),
        "put back to the session's own due time"
    );
}
