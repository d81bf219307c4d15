//! History read back (SPEC §4.4): timelines, comparisons and the booking
//! audit trail, checked against what is stored.

use chrono::{DateTime, Utc};
use mentorship::grpc::pb::{self, BookingStatus, SessionStatus};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// A wire duration in microseconds (the store's precision).
fn micros(d: &Option<prost_types::Duration>) -> i64 {
    let d = d.expect("duration");
    assert_eq!(d.nanos % 1000, 0, "whole microseconds");
    d.seconds * 1_000_000 + i64::from(d.nanos) / 1000
}

/// The stored time of each event of a session, in seq order.
async fn stored_times(app: &TestApp, session_id: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar("SELECT occurred_at FROM session_events WHERE session_id = $1::uuid ORDER BY seq")
        .bind(session_id)
        .fetch_all(&app.pool)
        .await
        .expect("times")
}

fn per_status(t: &[pb::StatusDuration]) -> Vec<(SessionStatus, i64)> {
    t.iter().map(|d| (d.status(), micros(&d.duration))).collect()
}

fn per_stage(t: &[pb::StageDuration]) -> Vec<(String, i64)> {
    t.iter().map(|d| (d.stage.clone(), micros(&d.duration))).collect()
}

async fn timeline(caller: &Caller, session_id: &str) -> Result<pb::GetSessionTimelineResponse, tonic::Status> {
    caller
        .call(pb::GetSessionTimelineRequest {
            session_id: session_id.to_owned(),
        })
        .await
}

#[tokio::test]
async fn a_timeline_adds_up_from_the_stored_event_times() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let c = app.coordinator();
    let s = on_demand(&app, &w, None).await.expect("create");
    c.advance_stage(&s.id, "design").await.expect("stage");
    c.pause_session(&s.id, "lunch").await.expect("pause");
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    c.resume_session(&s.id).await.expect("resume");
    c.advance_stage(&s.id, "review").await.expect("stage");
    c.complete_session(&s.id, None).await.expect("complete");

    let t = timeline(&c, &s.id).await.expect("timeline");
    let at = stored_times(&app, &s.id).await;
    let gap = |i: usize| (at[i + 1] - at[i]).num_microseconds().expect("small");
    // Events: 1 CREATED (ACTIVE), 2 stage design, 3 PAUSED, 4 ACTIVE, 5 stage review, 6 COMPLETED.
    assert_eq!(t.entries.len(), 6);
    let spent: Vec<i64> = t.entries.iter().map(|e| micros(&e.time_in_state)).collect();
    assert_eq!(
        spent,
        [gap(0), gap(1), gap(2), gap(3), gap(4), 0],
        "exactly the stored gaps"
    );
    let seqs: Vec<i64> = t.entries.iter().map(|e| e.event.as_ref().expect("event").seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    assert_eq!(
        per_status(&t.time_per_status),
        [
            (SessionStatus::Active, gap(0) + gap(1) + gap(3) + gap(4)),
            (SessionStatus::Paused, gap(2)),
            (SessionStatus::Completed, 0),
        ],
        "paused time is apart from active time"
    );
    assert!(gap(2) >= 30_000, "the pause lasted the sleep");
    let total = micros(&t.total_duration);
    assert_eq!(total, (at[5] - at[0]).num_microseconds().expect("small"));
    assert_eq!(
        per_status(&t.time_per_status).iter().map(|(_, d)| d).sum::<i64>(),
        total
    );
    assert_eq!(
        per_stage(&t.time_per_stage),
        [("design".to_owned(), gap(1) + gap(3)), ("review".to_owned(), gap(4))],
        "stage time is ACTIVE time with that label"
    );

    // Participants read their own; others are refused.
    assert!(timeline(&app.as_(&w.mentee_token()), &s.id).await.is_ok());
    let stranger = token(&["mentee"], Uuid::new_v4(), None);
    assert_status(
        timeline(&app.as_(&stranger), &s.id).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        timeline(&c, &Uuid::new_v4().to_string()).await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    assert_status(timeline(&c, "nope").await, Code::InvalidArgument, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn a_running_sessions_open_interval_counts_up_to_now() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let first = stored_times(&app, &s.id).await[0];
    let before = Utc::now();
    let t = timeline(&app.coordinator(), &s.id).await.expect("timeline");
    let after = Utc::now();
    let open = micros(&t.entries[0].time_in_state);
    let us = |d: chrono::Duration| d.num_microseconds().expect("small");
    assert!(
        us(before - first) <= open && open <= us(after - first),
        "{open} µs lies between the calls"
    );
    assert_eq!(micros(&t.total_duration), open);
    assert_eq!(per_status(&t.time_per_status), [(SessionStatus::Active, open)]);
}

#[tokio::test]
async fn compare_shows_both_summaries_and_each_config_difference() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let other = world(&app).await;
    let c = app.coordinator();
    let create = |listing: Uuid, template: &str| pb::CreateSessionRequest {
        mentee_id: w.mentee.to_string(),
        listing_id: listing.to_string(),
        template_id: template.to_owned(),
        ..Default::default()
    };
    // One mentee in both sessions, one after the other (one slot per mentee).
    let first = c.create_session(create(w.listing, "quick-fix")).await.expect("first");
    c.advance_stage(&first.id, "triage").await.expect("stage");
    let report = pb::SessionReport {
        summary: "fixed".into(),
        overall_score: Some(90),
        data: None,
    };
    c.complete_session(&first.id, Some(report.clone()))
        .await
        .expect("complete");
    let second = c
        .create_session(create(other.listing, "standard"))
        .await
        .expect("second");
    c.cancel_session(&second.id, "no longer needed").await.expect("cancel");

    let compare = |caller: Caller, a: String, b: String| async move {
        caller
            .call(pb::CompareSessionsRequest {
                first_session_id: a,
                second_session_id: b,
            })
            .await
    };
    let got = compare(c.clone(), first.id.clone(), second.id.clone())
        .await
        .expect("compare");
    let (a, b) = (got.first.expect("first"), got.second.expect("second"));
    assert_eq!(
        (a.session_id.as_str(), a.status()),
        (first.id.as_str(), SessionStatus::Completed)
    );
    assert_eq!(
        (b.session_id.as_str(), b.status()),
        (second.id.as_str(), SessionStatus::Cancelled)
    );
    assert_eq!((a.event_count, b.event_count), (3, 2));
    let got_report = a.report.clone().expect("report");
    assert_eq!(
        (got_report.summary, got_report.overall_score),
        (report.summary, report.overall_score)
    );
    assert_eq!((b.report.clone(), b.failure.clone()), (None, None));
    // Each side is its session's timeline.
    for (side, id) in [(&a, &first.id), (&b, &second.id)] {
        let t = timeline(&c, id).await.expect("timeline");
        assert_eq!(
            (&side.time_per_status, &side.time_per_stage, &side.total_duration),
            (&t.time_per_status, &t.time_per_stage, &t.total_duration)
        );
    }
    let differences: Vec<(String, prost_types::Value, prost_types::Value)> = got
        .config_differences
        .into_iter()
        .map(|d| (d.field, d.first.expect("first"), d.second.expect("second")))
        .collect();
    let text = |s: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.to_owned())),
    };
    assert_eq!(
        differences,
        [
            ("template_id".to_owned(), text("quick-fix"), text("standard")),
            ("max_duration".to_owned(), text("7200s"), text("28800s")),
            ("check_in_interval".to_owned(), text("900s"), text("1800s")),
            (
                "escalation_policy".to_owned(),
                text("ESCALATION_POLICY_IMMEDIATE"),
                text("ESCALATION_POLICY_PROGRESSIVE")
            ),
        ]
    );

    // A participant of both may compare them; a participant of one may not.
    assert!(
        compare(app.as_(&w.mentee_token()), first.id.clone(), second.id.clone())
            .await
            .is_ok()
    );
    assert_status(
        compare(app.as_(&w.mentor_token()), first.id.clone(), second.id.clone()).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let err = compare(c.clone(), "x".into(), String::new()).await;
    let status = assert_status(err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["first_session_id", "second_session_id"]);
}

#[tokio::test]
async fn the_booking_audit_trail_reads_back_in_pages() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let start = monday_at(9) + chrono::Duration::days(14);
    let b = draft(&app, &w, start, start + chrono::Duration::hours(1)).await;
    app.as_(&w.mentor_token())
        .decline_booking(&b.id, "on holiday")
        .await
        .expect("decline");
    let list = |caller: Caller, id: String, token: String| async move {
        caller
            .call(pb::ListBookingEventsRequest {
                booking_id: id,
                page_size: 1,
                page_token: token,
            })
            .await
    };
    let first = list(app.as_(&w.mentee_token()), b.id.clone(), String::new())
        .await
        .expect("page 1");
    assert_eq!(first.events.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let second = list(app.as_(&w.mentee_token()), b.id.clone(), first.next_page_token.clone())
        .await
        .expect("page 2");
    let events: Vec<_> = first.events.iter().chain(&second.events).collect();
    let got: Vec<(i64, BookingStatus, BookingStatus, pb::ActorKind, &str)> = events
        .iter()
        .map(|e| {
            let actor = e.actor.as_ref().expect("actor");
            (e.seq, e.from_status(), e.to_status(), actor.kind(), e.reason.as_str())
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                1,
                BookingStatus::Unspecified,
                BookingStatus::Draft,
                pb::ActorKind::Coordinator,
                ""
            ),
            (
                2,
                BookingStatus::Draft,
                BookingStatus::Declined,
                pb::ActorKind::Mentor,
                "on holiday"
            ),
        ]
    );
    assert_eq!(events[1].actor.as_ref().expect("actor").id, w.mentor_user.to_string());
    assert!(events.iter().all(|e| e.booking_id == b.id && e.occurred_at.is_some()));
    assert!(second.next_page_token.is_empty(), "the trail ends there");

    // Someone else's booking, an unknown one, a token of another booking.
    let stranger = token(&["mentee"], Uuid::new_v4(), None);
    assert_status(
        list(app.as_(&stranger), b.id.clone(), String::new()).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        list(app.coordinator(), Uuid::new_v4().to_string(), String::new()).await,
        Code::NotFound,
        "BOOKING_NOT_FOUND",
    );
    let other = draft(
        &app,
        &w,
        start + chrono::Duration::hours(2),
        start + chrono::Duration::hours(3),
    )
    .await;
    assert_status(
        list(app.coordinator(), other.id, first.next_page_token).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}
