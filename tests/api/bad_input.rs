//! Bad input: INVALID_ARGUMENT with field violations, and nothing stored.

use chrono::Duration;
use mentorship::grpc::pb;
use tonic::Code;

use crate::helpers::*;

async fn snapshot(app: &TestApp) -> Vec<i64> {
    app.stored_counts().await
}

fn expect_fields(result: Result<impl std::fmt::Debug, tonic::Status>, fields: &[&str]) {
    let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), fields, "{status:?}");
}

#[tokio::test]
async fn malformed_requests_are_rejected_with_field_violations_and_change_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let before = snapshot(&app).await;
    let c = coordinator();
    let (mut d, mut b, mut s) = (app.directory(), app.bookings(), app.sessions());

    // Malformed ids.
    expect_fields(
        s.get_session(authed(
            &c,
            pb::GetSessionRequest {
                session_id: "42".into(),
            },
        ))
        .await,
        &["session_id"],
    );
    expect_fields(
        b.get_booking(authed(
            &c,
            pb::GetBookingRequest {
                booking_id: String::new(),
            },
        ))
        .await,
        &["booking_id"],
    );
    expect_fields(
        b.accept_booking(authed(
            &c,
            pb::AcceptBookingRequest {
                booking_id: "not-a-uuid".into(),
                request_id: String::new(),
            },
        ))
        .await,
        &["booking_id"],
    );

    // Several problems at once are all reported.
    let t = monday_at(10);
    expect_fields(
        b.create_booking(authed(
            &c,
            pb::CreateBookingRequest {
                listing_id: "x".into(),
                mentee_id: w.mentee.to_string(),
                start_time: None,
                end_time: Some(prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: -1,
                }),
                notes: "n".repeat(4001),
                request_id: String::new(),
            },
        ))
        .await,
        &["listing_id", "start_time", "end_time", "notes"],
    );
    expect_fields(
        b.create_booking(authed(
            &c,
            pb::CreateBookingRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..booking_request(w.listing, w.mentee, t, t + Duration::hours(1))
            },
        ))
        .await,
        &["start_time"],
    );

    // Empty and oversize strings.
    expect_fields(
        d.upsert_mentee(authed(
            &c,
            pb::UpsertMenteeRequest {
                mentee: Some(pb::Mentee {
                    id: w.mentee.to_string(),
                    display_name: " ".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await,
        &["mentee.display_name"],
    );
    expect_fields(
        d.upsert_mentee(authed(
            &c,
            pb::UpsertMenteeRequest {
                mentee: Some(pb::Mentee {
                    id: w.mentee.to_string(),
                    display_name: "x".repeat(201),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await,
        &["mentee.display_name"],
    );
    expect_fields(
        d.upsert_mentee(authed(
            &c,
            pb::UpsertMenteeRequest {
                mentee: None,
                request_id: String::new(),
            },
        ))
        .await,
        &["mentee.id", "mentee.display_name"],
    );
    expect_fields(
        d.upsert_mentor(authed(
            &c,
            pb::UpsertMentorRequest {
                mentor: Some(pb::Mentor {
                    id: w.mentor.to_string(),
                    user_id: w.mentor_user.to_string(),
                    display_name: "Grace".into(),
                    skill_areas: vec!["Rust!".into()],
                    timezone: "Mars/Olympus".into(),
                    availability: vec![
                        pb::AvailabilityWindow {
                            day_of_week: 1,
                            start_local_time: "10:00".into(),
                            end_local_time: "09:00".into(),
                        },
                        pb::AvailabilityWindow {
                            day_of_week: 9,
                            start_local_time: "10:00".into(),
                            end_local_time: "11:00".into(),
                        },
                    ],
                    max_concurrent_sessions: -1,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await,
        &[
            "mentor.skill_areas[0]",
            "mentor.max_concurrent_sessions",
            "mentor.timezone",
            "mentor.availability[0].end_local_time",
            "mentor.availability[1].day_of_week",
        ],
    );
    expect_fields(
        d.upsert_listing(authed(
            &c,
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: "nope".into(),
                    title: String::new(),
                    skill_area: "A B".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await,
        &["listing.mentor_id", "listing.title", "listing.skill_area"],
    );
    expect_fields(
        b.cancel_booking(authed(
            &c,
            pb::CancelBookingRequest {
                booking_id: "z".into(),
                reason: String::new(),
                request_id: String::new(),
            },
        ))
        .await,
        &["booking_id", "reason"],
    );

    // Paging and filters. A page size past the maximum is capped (AIP-158).
    let capped = s
        .list_sessions(authed(
            &c,
            pb::ListSessionsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("a page size of 1000 is capped, not refused")
        .into_inner();
    assert!(capped.sessions.len() <= 100, "{}", capped.sessions.len());
    expect_fields(
        s.list_sessions(authed(
            &c,
            pb::ListSessionsRequest {
                page_size: -1,
                ..Default::default()
            },
        ))
        .await,
        &["page_size"],
    );
    expect_fields(
        s.list_sessions(authed(
            &c,
            pb::ListSessionsRequest {
                page_token: "bogus".into(),
                ..Default::default()
            },
        ))
        .await,
        &["page_token"],
    );
    expect_fields(
        s.list_sessions(authed(
            &c,
            pb::ListSessionsRequest {
                statuses: vec![0, 99],
                order_by: "mentor".into(),
                ..Default::default()
            },
        ))
        .await,
        &["statuses", "order_by"],
    );
    expect_fields(
        b.list_bookings(authed(
            &c,
            pb::ListBookingsRequest {
                mentor_id: "m".into(),
                ..Default::default()
            },
        ))
        .await,
        &["mentor_id"],
    );
    assert_eq!(snapshot(&app).await, before, "rejected requests store nothing");

    // A report out of range.
    let session = scheduled(&app, &w, monday_at(14)).await;
    let before_report = snapshot(&app).await;
    expect_fields(
        s.complete_session(authed(
            &c,
            pb::CompleteSessionRequest {
                session_id: session.id.clone(),
                report: Some(pb::SessionReport {
                    summary: "ok".into(),
                    overall_score: Some(101),
                    data: None,
                }),
                ..Default::default()
            },
        ))
        .await,
        &["report.overall_score"],
    );
    assert_eq!(snapshot(&app).await, before_report, "rejected requests store nothing");
}

/// A Struct whose `path` (a key, then a key of the nested Struct) holds a
/// string with a NUL character, which PostgreSQL's jsonb cannot store.
fn struct_with_nul(key: &str, nested: &str) -> prost_types::Struct {
    use prost_types::{Struct, Value, value::Kind};
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let inner = Struct {
        fields: [(nested.to_owned(), string("a\u{0}b"))].into(),
    };
    Struct {
        fields: [
            ("fine".to_owned(), string("ok")),
            (
                key.to_owned(),
                Value {
                    kind: Some(Kind::StructValue(inner)),
                },
            ),
        ]
        .into(),
    }
}

#[tokio::test]
async fn a_nul_character_inside_a_struct_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let c = app.coordinator();
    let session = scheduled(&app, &w, monday_at(10)).await;
    c.start_session(&session.id).await.expect("start");
    let events = app.count("session_events").await;
    let before = snapshot(&app).await;

    let report = pb::SessionReport {
        summary: "done".into(),
        overall_score: Some(90),
        data: Some(struct_with_nul("notes", "text")),
    };
    expect_fields(c.complete_session(&session.id, Some(report)).await, &["report.data"]);
    expect_fields(
        c.fail_session(&session.id, "boom", Some(struct_with_nul("trace", "line")))
            .await,
        &["details"],
    );
    // A NUL in a key is refused too.
    expect_fields(
        c.fail_session(&session.id, "boom", Some(struct_with_nul("k\u{0}", "line")))
            .await,
        &["details"],
    );
    let config = pb::SessionConfig {
        custom_settings: Some(struct_with_nul("ui", "theme")),
        ..Default::default()
    };
    expect_fields(
        c.update_session_config(&session.id, config, &["custom_settings"]).await,
        &["config.custom_settings"],
    );
    assert_eq!(snapshot(&app).await, before, "rejected requests store nothing");
    assert_eq!(app.count("session_events").await, events);
    let stored = c.get_session(&session.id).await.expect("get");
    assert_eq!(stored.status(), pb::SessionStatus::Active);
}
