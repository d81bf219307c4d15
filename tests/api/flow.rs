//! The booking → session happy path, checked in responses, storage and logs.

use chrono::Duration;
use mentorship::grpc::pb::{self, ActorKind, BookingStatus, SessionEventType, SessionStatus};

use crate::helpers::*;

#[tokio::test]
async fn booking_is_accepted_started_and_completed_with_a_full_audit_trail() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let start = monday_at(10);
    let end = start + Duration::hours(1);

    // The mentee books for itself.
    let booking = app
        .bookings()
        .create_booking(authed(
            &w.mentee_token(),
            pb::CreateBookingRequest {
                mentee_id: String::new(),
                ..booking_request(w.listing, w.mentee, start, end)
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .booking
        .expect("booking");
    assert_eq!(booking.status(), BookingStatus::Draft);
    assert_eq!(booking.mentee_id, w.mentee.to_string());
    assert_eq!(booking.mentor_id, w.mentor.to_string());
    assert_eq!(booking.origin(), pb::BookingOrigin::Requested);
    assert!(booking.session_id.is_empty());

    // The mentor accepts: the booking and its SCHEDULED session come back together.
    let accepted = app
        .bookings()
        .accept_booking(authed(
            &w.mentor_token(),
            pb::AcceptBookingRequest {
                booking_id: booking.id.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("accept")
        .into_inner();
    let b = accepted.booking.expect("booking");
    let s = accepted.session.expect("session");
    assert_eq!(b.status(), BookingStatus::Accepted);
    assert_eq!(b.session_id, s.id);
    assert_eq!(s.status(), SessionStatus::Scheduled);
    assert_eq!(s.booking_id, booking.id);
    assert_eq!((s.start_time, s.end_time), (booking.start_time, booking.end_time));
    assert_eq!(
        (s.mentee_id.as_str(), s.mentor_id.as_str()),
        (booking.mentee_id.as_str(), booking.mentor_id.as_str())
    );

    // The mentee starts, the mentor completes with a report.
    let started = app
        .sessions()
        .start_session(authed(
            &w.mentee_token(),
            pb::StartSessionRequest {
                session_id: s.id.clone(),
                etag: s.etag.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("start")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(started.status(), SessionStatus::Active);
    assert!(started.started_at.is_some());

    let completed = app
        .sessions()
        .complete_session(authed(
            &w.mentor_token(),
            pb::CompleteSessionRequest {
                session_id: s.id.clone(),
                report: Some(pb::SessionReport {
                    summary: "parser reviewed".into(),
                    overall_score: Some(87),
                    data: None,
                }),
                etag: String::new(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("complete")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(completed.status(), SessionStatus::Completed);
    assert!(completed.ended_at.is_some());
    let report = completed.report.expect("report");
    assert_eq!(
        (report.summary.as_str(), report.overall_score),
        ("parser reviewed", Some(87))
    );

    // Stored state agrees with the responses.
    let stored = app
        .sessions()
        .get_session(authed(
            &coordinator(),
            pb::GetSessionRequest {
                session_id: s.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(stored.status(), SessionStatus::Completed);
    let (status, times_match): (String, bool) = sqlx::query_as(
        "SELECT s.status, s.start_time = b.start_time AND s.end_time = b.end_time
         FROM sessions s JOIN bookings b ON b.id = s.booking_id WHERE s.id = $1::uuid",
    )
    .bind(&s.id)
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!((status.as_str(), times_match), ("COMPLETED", true));

    // The session's event log: created, started, completed, with actors.
    let events = event_log(&app, &s.id).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.r#type(),
                e.from_status(),
                e.to_status(),
                e.actor.as_ref().map(|a| a.kind()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                SessionEventType::Created,
                SessionStatus::Unspecified,
                SessionStatus::Scheduled,
                Some(ActorKind::Mentor)
            ),
            (
                SessionEventType::StatusChanged,
                SessionStatus::Scheduled,
                SessionStatus::Active,
                Some(ActorKind::Mentee)
            ),
            (
                SessionEventType::StatusChanged,
                SessionStatus::Active,
                SessionStatus::Completed,
                Some(ActorKind::Mentor)
            ),
        ]
    );
    assert_eq!(events[1].actor.as_ref().expect("actor").id, w.mentee.to_string());

    // ListSessionEvents pages through the same log one event at a time.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .sessions()
            .list_session_events(authed(
                &w.mentee_token(),
                pb::ListSessionEventsRequest {
                    session_id: s.id.clone(),
                    page_size: 1,
                    page_token: token.clone(),
                },
            ))
            .await
            .expect("page")
            .into_inner();
        paged.extend(page.events.into_iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, [1, 2, 3]);

    // The booking audit: created by the mentee, accepted by the mentor.
    let audit: Vec<(Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT from_status, to_status, actor_kind, actor_id FROM booking_events WHERE booking_id = $1::uuid ORDER BY id",
    )
    .bind(&booking.id)
    .fetch_all(&app.pool)
    .await
    .expect("audit");
    assert_eq!(
        audit,
        vec![
            (None, "DRAFT".into(), "MENTEE".into(), w.mentee.to_string()),
            (
                Some("DRAFT".into()),
                "ACCEPTED".into(),
                "MENTOR".into(),
                w.mentor_user.to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn list_sessions_pages_through_everything_once_and_binds_tokens_to_the_filter() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let mut ids = Vec::new();
    for day in 0..5 {
        let s = scheduled(&app, &w, monday_at(9) + Duration::days(day)).await;
        ids.push(s.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .sessions()
            .list_sessions(authed(
                &coordinator(),
                pb::ListSessionsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    mentee_id: w.mentee.to_string(),
                    order_by: "start_time".into(),
                    include_total_size: true,
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.total_size, 5);
        seen.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "start_time ascending, each once");

    // A token replayed with another filter is refused.
    let first = app
        .sessions()
        .list_sessions(authed(
            &coordinator(),
            pb::ListSessionsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    let err = app
        .sessions()
        .list_sessions(authed(
            &coordinator(),
            pb::ListSessionsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                statuses: vec![SessionStatus::Active as i32],
                ..Default::default()
            },
        ))
        .await;
    let status = assert_status(err, tonic::Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), vec!["page_token"]);

    // A mentee who is not a participant sees nothing.
    let stranger = token_for_new_mentee();
    let page = app
        .sessions()
        .list_sessions(authed(&stranger, pb::ListSessionsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(page.sessions.is_empty());
}

fn token_for_new_mentee() -> String {
    token(&["mentee"], uuid::Uuid::new_v4(), None)
}
