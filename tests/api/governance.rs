//! Session governance: on-demand sessions, config, retries, etags, races and
//! system timeouts, on one replica and on two. One test per kind of timeout
//! runs in real time; the others step the sweeper (`TestApp::sweep`).

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use mentorship::{
    app::Rules,
    grpc::pb::{self, ActorKind, SessionEventType, SessionStatus},
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// The one SYSTEM event of a timed-out session: (reason, occurred_at).
async fn timeout_event(app: &TestApp, id: &str) -> (String, chrono::DateTime<Utc>) {
    let system: Vec<pb::SessionEvent> = event_log(app, id)
        .await
        .into_iter()
        .filter(|e| e.actor.as_ref().map(|a| a.kind()) == Some(ActorKind::System))
        .filter(|e| e.r#type() == SessionEventType::StatusChanged)
        .collect();
    assert_eq!(system.len(), 1, "exactly one timeout event: {system:?}");
    let e = &system[0];
    assert_eq!(e.to_status(), SessionStatus::Cancelled);
    (e.reason.clone(), ts_of(&e.occurred_at))
}

fn create(mentee: Uuid, listing: Uuid) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        mentee_id: mentee.to_string(),
        listing_id: listing.to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn on_demand_session_has_an_implicit_accepted_booking() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.mentor_id, w.mentor.to_string(), "mentor from the listing");
    let booking = app.coordinator().get_booking(&s.booking_id).await.expect("booking");
    assert_eq!(booking.origin(), pb::BookingOrigin::OnDemand);
    assert_eq!(booking.status(), pb::BookingStatus::Accepted);
    assert_eq!(booking.session_id, s.id);
    assert_eq!((booking.start_time, booking.end_time), (s.start_time, s.end_time));
    let events = event_log(&app, &s.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].to_status(), SessionStatus::Active);

    // Only coordinators and services create sessions on demand.
    let err = app
        .as_(&w.mentee_token())
        .create_session(create(w.mentee, w.listing))
        .await;
    assert_status(err, Code::PermissionDenied, "PERMISSION_DENIED");

    // A story (no mentor) gets a mentor assigned: the one with its skill area.
    let story = add_listing(&app, None).await;
    let service = app.as_(&service());
    let other = add_mentee(&app).await;
    let assigned = service.create_session(create(other, story)).await.expect("assigned");
    assert_eq!(assigned.mentor_id, w.mentor.to_string());
    // A story in a skill area nobody has: no eligible mentor.
    let kernel = app
        .coordinator()
        .upsert_listing(pb::Listing {
            title: "Scheduler bug".into(),
            skill_area: "kernel".into(),
            ..Default::default()
        })
        .await
        .expect("listing");
    let err = service
        .create_session(create(other, kernel.id.parse().expect("uuid")))
        .await;
    assert_status(err, Code::FailedPrecondition, "NO_ELIGIBLE_MENTOR");
    // Naming a mentor works, with a template.
    let named = service
        .create_session(pb::CreateSessionRequest {
            mentor_id: w.mentor.to_string(),
            template_id: "quick-fix".into(),
            ..create(w.mentee, story)
        })
        .await
        .expect("create");
    let config = named.config.expect("config");
    assert_eq!(config.template_id, "quick-fix");
    assert_eq!(config.max_duration, Some(seconds(2 * 3600)));
    assert_eq!(config.escalation_policy(), pb::EscalationPolicy::Immediate);
}

#[tokio::test]
async fn config_rules_hold_at_their_boundaries() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let with = |max: i64, check: i64| {
        (
            pb::SessionConfig {
                max_duration: Some(seconds(max)),
                check_in_interval: Some(seconds(check)),
                ..Default::default()
            },
            vec!["max_duration", "check_in_interval"],
        )
    };
    for (max, check, ok) in [
        (15 * 60, 5 * 60, true),
        (15 * 60 - 1, 5 * 60, false),
        (72 * 3600, 5 * 60, true),
        (72 * 3600 + 1, 5 * 60, false),
        (3600, 5 * 60 - 1, false),
        (3600, 3600, true),
        (3600, 3601, false),
    ] {
        let r = on_demand(&app, &w, Some(with(max, check))).await;
        assert_eq!(r.is_ok(), ok, "max {max} check-in {check}: {r:?}");
        if let Ok(s) = r {
            // Free the mentee for the next case.
            app.coordinator()
                .cancel_session(&s.id, "next case")
                .await
                .expect("cancel");
        } else {
            assert_status(r, Code::InvalidArgument, "INVALID_ARGUMENT");
        }
    }
    let bad = pb::SessionConfig {
        quality_tier_override: Some(6),
        notifications: Some(pb::NotificationSettings {
            recipients: vec!["ok@example.com".into(), "nope".into()],
            ..Default::default()
        }),
        allowed_stages: vec!["Review!".into()],
        ..Default::default()
    };
    let status = assert_status(
        on_demand(
            &app,
            &w,
            Some((
                bad,
                vec!["quality_tier_override", "notifications.recipients", "allowed_stages"],
            )),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        [
            "config.quality_tier_override",
            "config.notifications.recipients[1]",
            "config.allowed_stages[0]"
        ]
    );
    let templates = app
        .as_(&w.mentee_token())
        .list_config_templates()
        .await
        .expect("templates");
    let ids: Vec<&str> = templates.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["quick-fix", "standard", "complex-feature"]);
}

#[tokio::test]
async fn update_session_config_follows_the_mask_and_the_live_session_rules() {
    let app = spawn_with(1, fast_rules()).await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let mentor = app.as_(&w.mentor_token());
    let updated = mentor
        .clone()
        .with_etag(&s.etag)
        .update_session_config(
            &s.id,
            pb::SessionConfig {
                check_in_interval: Some(seconds(600)),
                escalation_policy: pb::EscalationPolicy::Relaxed as i32,
                ..Default::default()
            },
            &["check_in_interval"],
        )
        .await
        .expect("update");
    let config = updated.config.clone().expect("config");
    assert_eq!(config.check_in_interval, Some(seconds(600)));
    assert_eq!(
        config.escalation_policy(),
        pb::EscalationPolicy::Progressive,
        "not in the mask: unchanged"
    );
    let events = event_log(&app, &s.id).await;
    let last = events.last().expect("event");
    assert_eq!(last.r#type(), SessionEventType::ConfigUpdated);
    let details = serde_json::to_string(&mentorship::grpc::convert::struct_to_json(
        last.details.as_ref().expect("details"),
    ))
    .expect("json");
    assert!(
        details.contains("check_in_interval") && details.contains("600s") && details.contains("1800s"),
        "{details}"
    );

    // A stale etag, an unknown path, a max_duration below the active time used.
    assert_status(
        mentor
            .clone()
            .with_etag(&s.etag)
            .update_session_config(&s.id, pb::SessionConfig::default(), &["slack"])
            .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    let status = assert_status(
        mentor
            .update_session_config(&s.id, pb::SessionConfig::default(), &["colour"])
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["update_mask"]);
    // Two seconds of active time used, without waiting for them.
    sqlx::query("UPDATE sessions SET active_since = active_since - interval '2 seconds' WHERE id = $1::uuid")
        .bind(&s.id)
        .execute(&app.pool)
        .await
        .expect("age the session");
    assert_status(
        mentor
            .update_session_config(
                &s.id,
                pb::SessionConfig {
                    max_duration: Some(seconds(1)),
                    check_in_interval: Some(seconds(1)),
                    ..Default::default()
                },
                &["max_duration", "check_in_interval"],
            )
            .await,
        Code::FailedPrecondition,
        "MAX_DURATION_BELOW_ACTIVE_TIME",
    );
    let config_now = app.coordinator().get_session_config(&s.id).await.expect("config");
    assert_eq!(config_now, config, "refused updates change nothing");

    // Terminal sessions keep their config.
    app.coordinator().complete_session(&s.id, None).await.expect("complete");
    let sixty = pb::SessionConfig {
        check_in_interval: Some(seconds(60)),
        ..Default::default()
    };
    assert_status(
        mentor.update_session_config(&s.id, sixty, &["check_in_interval"]).await,
        Code::FailedPrecondition,
        "SESSION_TERMINAL",
    );
}

#[tokio::test]
async fn advance_stage_honours_the_allowed_list() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let config = pb::SessionConfig {
        allowed_stages: vec!["design".into(), "review".into()],
        ..Default::default()
    };
    let s = on_demand(&app, &w, Some((config, vec!["allowed_stages"])))
        .await
        .expect("create");
    let mentor = app.as_(&w.mentor_token());
    assert_eq!(
        mentor.advance_stage(&s.id, "design").await.expect("design").stage,
        "design"
    );
    assert_status(
        mentor.advance_stage(&s.id, "deploy").await,
        Code::FailedPrecondition,
        "STAGE_NOT_ALLOWED",
    );
    let status = assert_status(
        mentor.advance_stage(&s.id, "Bad Stage").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["stage"]);
    assert_eq!(
        mentor.advance_stage(&s.id, "review").await.expect("review").stage,
        "review"
    );
    let events = event_log(&app, &s.id).await;
    let stages: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.r#type() == SessionEventType::StageChanged)
        .map(|e| (e.from_stage.clone(), e.to_stage.clone()))
        .collect();
    assert_eq!(
        stages,
        [(String::new(), "design".into()), ("design".into(), "review".into())]
    );
}

#[tokio::test]
async fn retries_with_a_request_id_return_the_first_response_and_change_nothing() {
    let app = spawn_replicas(2).await;
    let w = world(&app).await;
    let request_id = Uuid::new_v4().to_string();
    let t = monday_at(10);
    // Retries come from one caller: the same id from another caller is a different request.
    let caller = coordinator();
    let create = |replica: usize, notes: &str| {
        let c = app.on(replica, &caller).with_request_id(&request_id);
        let req = pb::CreateBookingRequest {
            notes: notes.into(),
            ..booking_request(w.listing, w.mentee, t, t + Duration::hours(1))
        };
        tokio::spawn(async move { c.create_booking(req).await })
    };
    // Eight copies in parallel, across two replicas: one booking, one response.
    let mut handles = Vec::new();
    for i in 0..8 {
        handles.push(create(i % 2, "same"));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.expect("join").expect("create").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry sees the first response");
    assert_eq!(app.count("bookings").await, 1);
    assert_eq!(app.count("booking_events").await, 1);

    // The same id with a different request is refused.
    let err = create(0, "different").await.expect("join");
    let status = assert_status(err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["request_id"]);

    // Accept retried: one session, the same one.
    let mentor = app.as_(&w.mentor_token()).with_request_id(&Uuid::new_v4().to_string());
    let first = mentor.accept_booking(&ids[0]).await.expect("accept");
    let second = mentor.accept_booking(&ids[0]).await.expect("accept again");
    assert_eq!(first, second);
    assert_eq!(app.count("sessions").await, 1);

    // A session transition retried after another change still answers the first response.
    let session = first.session.expect("session");
    let starter = app.as_(&caller).with_request_id(&Uuid::new_v4().to_string());
    let started = starter.start_session(&session.id).await.expect("start");
    app.coordinator().pause_session(&session.id, "").await.expect("pause");
    let replayed = starter.start_session(&session.id).await.expect("start again");
    assert_eq!(replayed, started);
    assert_eq!(replayed.status(), SessionStatus::Active);
    assert_eq!(get_session(&app, &session.id).await.status(), SessionStatus::Paused);
    assert_eq!(event_log(&app, &session.id).await.len(), 3);

    // A malformed request id is bad input.
    let err = app
        .coordinator()
        .with_request_id("r-1")
        .resume_session(&session.id)
        .await;
    let status = assert_status(err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["request_id"]);
}

/// A request_id belongs to its caller: another caller using the same id
/// makes its own request, neither refused nor answered with the first
/// caller's response.
#[tokio::test]
async fn a_request_id_is_scoped_to_its_caller() {
    let app = spawn_app().await;
    let (w, other) = (world(&app).await, world(&app).await);
    let request_id = Uuid::new_v4().to_string();
    let t = monday_at(10);
    let (alice, bob) = (coordinator(), coordinator());
    let book = |caller: &str, w: &World, notes: &str| {
        let c = app.as_(caller).with_request_id(&request_id);
        let req = pb::CreateBookingRequest {
            notes: notes.into(),
            ..booking_request(w.listing, w.mentee, t, t + Duration::hours(1))
        };
        async move { c.create_booking(req).await }
    };
    let first = book(&alice, &w, "alice's").await.expect("alice books");
    // Bob's different request with the same id is his own: stored, not refused.
    let second = book(&bob, &other, "bob's").await.expect("bob books");
    assert_ne!(first.id, second.id);
    assert_eq!(second.notes, "bob's");
    // Bob's identical body does not learn Alice's booking either.
    let same_body = book(&bob, &w, "alice's").await;
    let status = assert_status(same_body, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        ["request_id"],
        "bob's own id, used for another request"
    );
    // Each caller's retry answers its own first response.
    assert_eq!(book(&alice, &w, "alice's").await.expect("alice retries"), first);
    assert_eq!(book(&bob, &other, "bob's").await.expect("bob retries"), second);
    assert_eq!(app.count("bookings").await, 2);
}

/// What a mutation answers is what is stored: the same session a GetSession
/// (or a watcher) sees afterwards, timestamps to the microsecond.
#[tokio::test]
async fn a_mutations_response_is_the_stored_session() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let c = app.coordinator();
    let same = |answered: &pb::Session, stored: pb::Session| {
        let strip = |s: &pb::Session| pb::Session {
            active_duration: None,
            ..s.clone()
        };
        assert_eq!(strip(answered), strip(&stored));
    };
    let s = scheduled(&app, &w, monday_at(10)).await;
    same(&s, get_session(&app, &s.id).await);
    let started = c.start_session(&s.id).await.expect("start");
    same(&started, get_session(&app, &s.id).await);
    let paused = c.pause_session(&s.id, "break").await.expect("pause");
    same(&paused, get_session(&app, &s.id).await);
    let staged = c.resume_session(&s.id).await.expect("resume");
    same(&staged, get_session(&app, &s.id).await);
    let done = c.complete_session(&s.id, None).await.expect("complete");
    same(&done, get_session(&app, &s.id).await);
    let other = world(&app).await;
    let created = on_demand(&app, &other, None).await.expect("create");
    same(&created, get_session(&app, &created.id).await);
}

#[tokio::test]
async fn a_stale_etag_is_aborted_and_changes_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;
    let started = app
        .coordinator()
        .with_etag(&s.etag)
        .start_session(&s.id)
        .await
        .expect("start with the current etag");
    assert_ne!(started.etag, s.etag);
    let err = app.coordinator().with_etag(&s.etag).complete_session(&s.id, None).await;
    let status = assert_status(err, Code::Aborted, "ETAG_MISMATCH");
    use tonic_types::StatusExt;
    assert_eq!(
        status
            .get_details_error_info()
            .expect("info")
            .metadata
            .get("current_etag"),
        Some(&started.etag)
    );
    assert_eq!(get_session(&app, &s.id).await.status(), SessionStatus::Active);
    assert_eq!(event_log(&app, &s.id).await.len(), 2);
}

async fn race_round(app: &TestApp, w: &World, round: i64) {
    let s = scheduled(app, w, monday_at(0) + Duration::days(round)).await;
    let s = app.coordinator().start_session(&s.id).await.expect("start");
    let n = app.replicas.len();
    let tok = coordinator();
    let on = |k: usize| app.on((round as usize + k) % n, &tok).with_etag(&s.etag);
    let (complete, cancel, pause) = (on(0), on(1), on(2));
    let id = s.id.clone();
    let (a, b, d) = tokio::join!(
        tokio::spawn({
            let id = id.clone();
            async move { complete.complete_session(&id, None).await.map(|s| s.status()) }
        }),
        tokio::spawn({
            let id = id.clone();
            async move { cancel.cancel_session(&id, "race").await.map(|s| s.status()) }
        }),
        tokio::spawn(async move { pause.pause_session(&id, "").await.map(|s| s.status()) }),
    );
    let results = [a.expect("join"), b.expect("join"), d.expect("join")];
    let winners: Vec<SessionStatus> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(winners.len(), 1, "round {round}: exactly one wins: {results:?}");
    for loser in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            loser.code(),
            Code::Aborted,
            "round {round}: losers see a stale etag: {loser:?}"
        );
    }
    let now = get_session(app, &s.id).await;
    assert_eq!(now.status(), winners[0]);
    let events = event_log(app, &s.id).await;
    assert_eq!(events.len(), 3, "created, started, and the winner");
    assert_eq!(events[2].from_status(), SessionStatus::Active);
    assert_eq!(events[2].to_status(), winners[0]);
}

#[tokio::test]
async fn conflicting_transitions_in_parallel_on_one_replica_exactly_one_wins() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    for round in 0..scale(12, 200) as i64 {
        race_round(&app, &w, round).await;
    }
}

#[tokio::test]
async fn conflicting_transitions_in_parallel_on_two_replicas_exactly_one_wins() {
    let app = spawn_with(2, roomy_rules()).await;
    let w = world(&app).await;
    for round in 0..scale(12, 200) as i64 {
        race_round(&app, &w, round).await;
    }
}

fn short_max_duration(secs: i64) -> Option<(pb::SessionConfig, Vec<&'static str>)> {
    Some((
        pb::SessionConfig {
            max_duration: Some(seconds(secs)),
            check_in_interval: Some(seconds(1)),
            ..Default::default()
        },
        vec!["max_duration", "check_in_interval"],
    ))
}

/// Real time: TIMEOUT fires within a second of its deadline, and paused time does not count.
#[tokio::test]
async fn max_duration_counts_active_time_only_and_cancels_once() {
    let app = spawn_jobs(1, fast_rules(), Jobs::RealTime).await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, short_max_duration(2)).await.expect("create");
    // Pause at once; the 2 s pause timeout is long enough to sit paused for 1.2 s.
    app.coordinator().pause_session(&s.id, "").await.expect("pause");
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let resumed = app.coordinator().resume_session(&s.id).await.expect("resume");
    assert_eq!(resumed.status(), SessionStatus::Active, "paused time did not count");
    let done = wait_for_status(&app, &s.id, SessionStatus::Cancelled, StdDuration::from_secs(10)).await;
    assert_eq!(done.status(), SessionStatus::Cancelled);
    assert_eq!(done.cancel_reason, "TIMEOUT");
    let active = done.active_duration.expect("active");
    assert!(
        active.seconds >= 2 && active.seconds < 3,
        "active time at the timeout: {active:?}"
    );
    let (reason, fired) = timeout_event(&app, &s.id).await;
    assert_eq!(reason, "TIMEOUT");
    let events = event_log(&app, &s.id).await;
    let resumed_at = ts_of(&events[2].occurred_at);
    let due =
        resumed_at + Duration::milliseconds(2000 - 1) - (ts_of(&events[1].occurred_at) - ts_of(&events[0].occurred_at));
    assert!(
        fired >= due - Duration::milliseconds(50),
        "not before the deadline: fired {fired}, due {due}"
    );
    assert!(
        fired <= due + Duration::seconds(1),
        "within a second of the deadline: fired {fired}, due {due}"
    );
}

/// Real time: PAUSE_TIMEOUT.
#[tokio::test]
async fn a_session_paused_past_its_pause_timeout_is_cancelled() {
    let app = spawn_jobs(1, fast_rules(), Jobs::RealTime).await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let paused = app
        .as_(&w.mentor_token())
        .pause_session(&s.id, "lunch")
        .await
        .expect("pause");
    let done = wait_for_status(&app, &s.id, SessionStatus::Cancelled, StdDuration::from_secs(10)).await;
    assert_eq!(done.cancel_reason, "PAUSE_TIMEOUT");
    let (reason, fired) = timeout_event(&app, &s.id).await;
    assert_eq!(reason, "PAUSE_TIMEOUT");
    let paused_at = ts_of(&event_log(&app, &s.id).await[1].occurred_at);
    assert!(
        fired >= paused_at + Duration::seconds(2) && fired <= paused_at + Duration::seconds(3),
        "{paused_at} → {fired}"
    );
    assert_eq!(paused.status(), SessionStatus::Paused);
}

/// Real time: NO_SHOW.
#[tokio::test]
async fn a_scheduled_session_not_started_is_a_no_show() {
    let app = spawn_jobs(1, fast_rules(), Jobs::RealTime).await;
    let w = world(&app).await;
    let start = Utc::now() + Duration::milliseconds(500);
    let b = draft(&app, &w, start, start + Duration::seconds(1)).await;
    let s = accept(&app, &b.id).await.expect("accept").session.expect("session");
    let done = wait_for_status(&app, &s.id, SessionStatus::Cancelled, StdDuration::from_secs(10)).await;
    assert_eq!(done.cancel_reason, "NO_SHOW");
    let (reason, fired) = timeout_event(&app, &s.id).await;
    assert_eq!(reason, "NO_SHOW");
    let due = ts_of(&s.end_time) + Duration::seconds(1);
    assert!(
        fired >= due && fired <= due + Duration::seconds(1),
        "due {due}, fired {fired}"
    );
}

/// The deadline lives in the database, not in the replica that armed it:
/// after that replica stopped, and the deadline passed with no replica
/// running, a replica started later fires it, once.
#[tokio::test]
async fn a_deadline_armed_by_a_stopped_replica_fires_on_a_later_one() {
    let mut app = spawn_with(1, fast_rules()).await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, short_max_duration(1)).await.expect("create");
    let replica = app.replicas.remove(0);
    replica.server.shutdown().await.expect("shutdown");
    app.expire_deadline(&s.id).await;
    let stored: String = sqlx::query_scalar("SELECT status FROM sessions WHERE id = $1::uuid")
        .bind(&s.id)
        .fetch_one(&app.pool)
        .await
        .expect("status");
    assert_eq!(stored, "ACTIVE", "nothing fires while no replica runs");
    app.replicas
        .push(start_replica(&app.database_url, fast_rules(), Jobs::Stepped).await);
    assert_eq!(app.sweep().await, 1);
    assert_eq!(app.sweep().await, 0, "fired once");
    let done = get_session(&app, &s.id).await;
    assert_eq!(done.status(), SessionStatus::Cancelled);
    assert_eq!(done.cancel_reason, "TIMEOUT");
    timeout_event(&app, &s.id).await;
}

/// Two replicas' sweepers race over the same due sessions: each fires exactly once.
#[tokio::test]
async fn with_two_replicas_each_timeout_fires_exactly_once() {
    // Room for every session at once (full scale makes 100), so each one is
    // ACTIVE and its max_duration is what fires.
    let rules = Rules {
        limits: roomy_rules().limits,
        ..fast_rules()
    };
    let app = spawn_with(2, rules).await;
    let mut ids = Vec::new();
    for _ in 0..scale(6, 100) {
        let w = world(&app).await;
        let s = on_demand(&app, &w, short_max_duration(3600)).await.expect("create");
        app.expire_deadline(&s.id).await;
        ids.push(s.id);
    }
    let sweep = |i: usize| {
        let replica = app.replicas[i].app.clone();
        tokio::spawn(async move { mentorship::jobs::sweeper::sweep_once(&replica).await.expect("sweep") })
    };
    let (a, b) = tokio::join!(sweep(0), sweep(1));
    let fired = a.expect("join") + b.expect("join");
    assert_eq!(fired, ids.len(), "every due timeout fired, none twice");
    assert_eq!(app.sweep().await, 0);
    for id in &ids {
        let (reason, _) = timeout_event(&app, id).await;
        assert_eq!(reason, "TIMEOUT");
        assert_eq!(event_log(&app, id).await.len(), 2);
    }
}

#[tokio::test]
async fn a_timeout_that_cannot_fire_does_not_hold_back_the_others() {
    let app = spawn_with(1, fast_rules()).await;
    let a = world(&app).await;
    let b = world(&app).await;
    let broken = on_demand(&app, &a, None).await.expect("create");
    // Corrupt it and make it the first due deadline.
    sqlx::query("UPDATE sessions SET config = '{}', deadline = now() - interval '1 minute' WHERE id = $1::uuid")
        .bind(&broken.id)
        .execute(&app.pool)
        .await
        .expect("corrupt");
    let healthy = on_demand(&app, &b, short_max_duration(3600)).await.expect("create");
    app.expire_deadline(&healthy.id).await;
    assert_eq!(app.sweep().await, 1, "the healthy one fires");
    let done = get_session(&app, &healthy.id).await;
    assert_eq!(done.cancel_reason, "TIMEOUT");
    let still: String = sqlx::query_scalar("SELECT status FROM sessions WHERE id = $1::uuid")
        .bind(&broken.id)
        .fetch_one(&app.pool)
        .await
        .expect("status");
    assert_eq!(still, "ACTIVE", "the broken one is skipped, not half-applied");
}
