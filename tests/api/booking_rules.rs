//! Each rule of SPEC §3 on its own.

use chrono::{Duration, TimeZone, Utc};
use mentorship::grpc::pb::{self, BookingStatus, DayOfWeek};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

async fn create(app: &TestApp, req: pb::CreateBookingRequest) -> Result<pb::Booking, tonic::Status> {
    app.bookings()
        .create_booking(authed(&coordinator(), req))
        .await
        .map(|r| r.into_inner().booking.expect("booking"))
}

#[tokio::test]
async fn start_must_precede_end() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(10);
    let err = create(&app, booking_request(w.listing, w.mentee, t, t)).await;
    let status = assert_status(err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), vec!["end_time"]);
    assert_eq!(app.count("bookings").await, 0);
}

#[tokio::test]
async fn duration_must_be_within_the_configured_bounds() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(8);
    for (minutes, ok) in [(14, false), (15, true), (8 * 60, true), (8 * 60 + 1, false)] {
        let result = create(
            &app,
            booking_request(w.listing, w.mentee, t, t + Duration::minutes(minutes)),
        )
        .await;
        if ok {
            let b = result.unwrap_or_else(|e| panic!("{minutes} min should be allowed: {e:?}"));
            // Free the slot again for the next case.
            app.bookings()
                .cancel_booking(authed(
                    &coordinator(),
                    pb::CancelBookingRequest {
                        booking_id: b.id,
                        reason: "next case".into(),
                        request_id: String::new(),
                    },
                ))
                .await
                .expect("cancel");
        } else {
            let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
            assert_eq!(violated_fields(&status), vec!["end_time"], "{minutes} min");
        }
    }
    assert_eq!(app.count("bookings").await, 2);
}

#[tokio::test]
async fn start_must_be_in_the_future() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = Utc::now() - Duration::minutes(5);
    let status = assert_status(
        create(&app, booking_request(w.listing, w.mentee, t, t + Duration::hours(1))).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), vec!["start_time"]);
    assert_eq!(app.count("bookings").await, 0);
}

#[tokio::test]
async fn listing_must_have_a_mentor() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let story = add_listing(&app, None).await;
    let t = monday_at(10);
    assert_status(
        create(&app, booking_request(story, w.mentee, t, t + Duration::hours(1))).await,
        Code::FailedPrecondition,
        "LISTING_HAS_NO_MENTOR",
    );
    assert_eq!(app.count("bookings").await, 0);
}

#[tokio::test]
async fn unknown_listing_and_mentee_are_not_found() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(10);
    assert_status(
        create(
            &app,
            booking_request(Uuid::new_v4(), w.mentee, t, t + Duration::hours(1)),
        )
        .await,
        Code::NotFound,
        "LISTING_NOT_FOUND",
    );
    assert_status(
        create(
            &app,
            booking_request(w.listing, Uuid::new_v4(), t, t + Duration::hours(1)),
        )
        .await,
        Code::NotFound,
        "MENTEE_NOT_FOUND",
    );
}

#[tokio::test]
async fn booking_must_lie_inside_one_availability_window_in_the_mentors_zone() {
    let app = spawn_app().await;
    let mentee = add_mentee(&app).await;
    // Tokyo has no DST: Monday 09:00-12:00 JST is 00:00-03:00 UTC.
    let (mentor, _) = add_mentor(&app, "Asia/Tokyo", vec![window(DayOfWeek::Monday, "09:00", "12:00")]).await;
    let listing = add_listing(&app, Some(mentor)).await;
    let monday = monday_at(0);
    let inside = create(
        &app,
        booking_request(listing, mentee, monday, monday + Duration::hours(1)),
    )
    .await;
    assert!(inside.is_ok(), "{inside:?}");
    for (start, end) in [
        (monday - Duration::hours(1), monday + Duration::minutes(30)), // starts before the window
        (monday + Duration::hours(2), monday + Duration::hours(4)),    // ends after it
        (
            monday + Duration::days(1),
            monday + Duration::days(1) + Duration::hours(1),
        ), // Tuesday
    ] {
        let status = assert_status(
            create(&app, booking_request(listing, mentee, start, end)).await,
            Code::FailedPrecondition,
            "OUTSIDE_AVAILABILITY",
        );
        assert!(status.message().contains("Asia/Tokyo"));
    }
    assert_eq!(app.count("bookings").await, 1);
}

#[tokio::test]
async fn availability_follows_dst_in_the_mentors_zone() {
    let app = spawn_app().await;
    let mentee = add_mentee(&app).await;
    // New York, Sunday 01:00-04:00 local. DST starts Sunday 2027-03-14 at 02:00 (→ 03:00).
    let (mentor, _) = add_mentor(
        &app,
        "America/New_York",
        vec![window(DayOfWeek::Sunday, "01:00", "04:00")],
    )
    .await;
    let listing = add_listing(&app, Some(mentor)).await;
    let utc = |d, h, m| Utc.with_ymd_and_hms(2027, 3, d, h, m, 0).single().expect("time");

    // 01:30 EST (06:30Z) to 03:30 EDT (07:30Z): one real hour across the change, inside the window.
    let across = create(&app, booking_request(listing, mentee, utc(14, 6, 30), utc(14, 7, 30))).await;
    assert!(across.is_ok(), "booking across the DST change: {across:?}");

    // 01:30 EST to 04:30 EDT is only two real hours but ends after 04:00 local:
    // a fixed offset taken at the start (UTC-5) would wrongly see 03:30.
    assert_status(
        create(&app, booking_request(listing, mentee, utc(14, 6, 30), utc(14, 8, 30))).await,
        Code::FailedPrecondition,
        "OUTSIDE_AVAILABILITY",
    );

    // The same wall-clock window before and after the change maps to different UTC hours.
    // 2027-03-07 (EST, UTC-5): 01:00 local = 06:00Z.  2027-03-21 (EDT, UTC-4): 01:00 local = 05:00Z.
    assert!(
        create(&app, booking_request(listing, mentee, utc(7, 6, 0), utc(7, 7, 0)))
            .await
            .is_ok()
    );
    assert!(
        create(&app, booking_request(listing, mentee, utc(21, 5, 0), utc(21, 6, 0)))
            .await
            .is_ok()
    );
    assert_status(
        create(&app, booking_request(listing, mentee, utc(21, 8, 0), utc(21, 8, 30))).await,
        Code::FailedPrecondition,
        "OUTSIDE_AVAILABILITY",
    );
}

/// The reported bug: in autumn the clocks repeat an hour, and a 60-minute
/// booking from 02:00 CEST to 02:00 CET read as 02:00-02:00 and was accepted
/// into a 30-minute window.
#[tokio::test]
async fn an_autumn_change_never_squeezes_a_booking_into_a_shorter_window() {
    let app = spawn_app().await;
    let mentee = add_mentee(&app).await;
    // Berlin, Sunday 02:00-02:30. Sunday 2027-10-31 at 01:00Z, 03:00 CEST becomes 02:00 CET.
    let (mentor, _) = add_mentor(&app, "Europe/Berlin", vec![window(DayOfWeek::Sunday, "02:00", "02:30")]).await;
    let listing = add_listing(&app, Some(mentor)).await;
    let utc = |h, m| Utc.with_ymd_and_hms(2027, 10, 31, h, m, 0).single().expect("time");
    for (from, to) in [(utc(0, 0), utc(1, 0)), (utc(0, 15), utc(1, 15))] {
        assert_status(
            create(&app, booking_request(listing, mentee, from, to)).await,
            Code::FailedPrecondition,
            "OUTSIDE_AVAILABILITY",
        );
    }
    assert_eq!(app.count("bookings").await, 0);
    // Both 02:00-02:30 of that night fit: CEST, then CET.
    for (from, to) in [(utc(0, 0), utc(0, 30)), (utc(1, 0), utc(1, 30))] {
        let fits = create(&app, booking_request(listing, mentee, from, to)).await;
        assert!(fits.is_ok(), "{from} to {to}: {fits:?}");
    }
}

#[tokio::test]
async fn no_overlap_with_an_accepted_booking_of_the_same_mentor_or_mentee() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(10);
    let first = draft(&app, &w, t, t + Duration::hours(1)).await;
    // A DRAFT blocks nothing: a second overlapping draft is fine.
    let second = draft(&app, &w, t + Duration::minutes(30), t + Duration::minutes(90)).await;
    accept(&app, &first.id).await.expect("accept first");

    // Same mentor, another mentee.
    let other_mentee = add_mentee(&app).await;
    let err = create(
        &app,
        booking_request(
            w.listing,
            other_mentee,
            t + Duration::minutes(30),
            t + Duration::minutes(90),
        ),
    )
    .await;
    assert_status(err, Code::FailedPrecondition, "BOOKING_OVERLAP");

    // Same mentee, another mentor.
    let (other_mentor, _) = add_mentor(&app, "UTC", vec![]).await;
    let other_listing = add_listing(&app, Some(other_mentor)).await;
    let err = create(
        &app,
        booking_request(
            other_listing,
            w.mentee,
            t + Duration::minutes(59),
            t + Duration::hours(2),
        ),
    )
    .await;
    assert_status(err, Code::FailedPrecondition, "BOOKING_OVERLAP");

    // Accepting the overlapping draft now fails on the exclusion constraint.
    assert_status(
        accept(&app, &second.id).await,
        Code::FailedPrecondition,
        "BOOKING_OVERLAP",
    );
    let (status,): (String,) = sqlx::query_as("SELECT status FROM bookings WHERE id = $1::uuid")
        .bind(&second.id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(status, "DRAFT");

    // Back-to-back is not an overlap.
    assert!(
        create(
            &app,
            booking_request(w.listing, other_mentee, t + Duration::hours(1), t + Duration::hours(2))
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn decline_needs_a_reason_and_makes_no_session() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let b = draft(&app, &w, monday_at(10), monday_at(11)).await;
    let decline = |reason: &str| {
        let mut client = app.bookings();
        let req = authed(
            &w.mentor_token(),
            pb::DeclineBookingRequest {
                booking_id: b.id.clone(),
                reason: reason.into(),
                request_id: String::new(),
            },
        );
        async move { client.decline_booking(req).await }
    };
    let status = assert_status(decline("  ").await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), vec!["reason"]);
    let declined = decline("fully booked")
        .await
        .expect("decline")
        .into_inner()
        .booking
        .expect("booking");
    assert_eq!(declined.status(), BookingStatus::Declined);
    assert_eq!(declined.reason, "fully booked");
    assert_eq!(app.count("sessions").await, 0);
    assert_status(accept(&app, &b.id).await, Code::FailedPrecondition, "BOOKING_NOT_DRAFT");
    assert_eq!(app.count("sessions").await, 0);
    let audit: (String, String, String) = sqlx::query_as(
        "SELECT to_status, actor_kind, reason FROM booking_events WHERE booking_id = $1::uuid ORDER BY id DESC LIMIT 1",
    )
    .bind(&b.id)
    .fetch_one(&app.pool)
    .await
    .expect("audit");
    assert_eq!(audit, ("DECLINED".into(), "MENTOR".into(), "fully booked".into()));
}

#[tokio::test]
async fn cancel_only_from_draft_and_only_once() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let cancel = |id: String| {
        let mut client = app.bookings();
        let req = authed(
            &w.mentee_token(),
            pb::CancelBookingRequest {
                booking_id: id,
                reason: "changed my mind".into(),
                request_id: String::new(),
            },
        );
        async move { client.cancel_booking(req).await }
    };
    let b = draft(&app, &w, monday_at(10), monday_at(11)).await;
    let cancelled = cancel(b.id.clone())
        .await
        .expect("cancel")
        .into_inner()
        .booking
        .expect("booking");
    assert_eq!(cancelled.status(), BookingStatus::Cancelled);
    assert_status(
        cancel(b.id.clone()).await,
        Code::FailedPrecondition,
        "BOOKING_NOT_DRAFT",
    );

    // An accepted booking cannot be cancelled: its session is cancelled instead.
    let s = scheduled(&app, &w, monday_at(12)).await;
    let status = assert_status(
        cancel(s.booking_id.clone()).await,
        Code::FailedPrecondition,
        "BOOKING_NOT_DRAFT",
    );
    assert!(status.message().contains("cancel its session"));
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM booking_events WHERE to_status = 'CANCELLED'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(audit_rows, 1);
}

#[tokio::test]
async fn the_database_itself_refuses_broken_invariants() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;

    // A second session for the same booking.
    let dup = sqlx::query(
        "INSERT INTO sessions (id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status, config)
         SELECT gen_random_uuid(), booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, 'SCHEDULED', config
         FROM sessions WHERE id = $1::uuid",
    )
    .bind(&s.id)
    .execute(&app.pool)
    .await;
    assert!(dup.unwrap_err().to_string().contains("sessions_booking_id_key"));

    // Session times that differ from the booking's.
    let moved = sqlx::query("UPDATE sessions SET end_time = end_time + interval '1 minute' WHERE id = $1::uuid")
        .bind(&s.id)
        .execute(&app.pool)
        .await;
    assert!(moved.unwrap_err().to_string().contains("sessions_booking_fkey"));

    // A booking with a session can no longer leave ACCEPTED.
    let reopened = sqlx::query("UPDATE bookings SET status = 'DRAFT' WHERE id = $1::uuid")
        .bind(&s.booking_id)
        .execute(&app.pool)
        .await;
    assert!(reopened.unwrap_err().to_string().contains("sessions_booking_fkey"));

    // Overlapping ACCEPTED bookings, written behind the service's back
    // (holds_slot is derived: there is no way to insert one that does not block).
    let overlap = sqlx::query(
        "INSERT INTO bookings (id, listing_id, mentor_id, mentee_id, start_time, end_time, status, origin)
         SELECT gen_random_uuid(), listing_id, mentor_id, mentee_id, start_time + interval '10 minutes',
                end_time + interval '10 minutes', 'ACCEPTED', 'REQUESTED'
         FROM bookings WHERE id = $1::uuid",
    )
    .bind(&s.booking_id)
    .execute(&app.pool)
    .await;
    assert!(overlap.unwrap_err().to_string().contains("no_overlap"));

    // Unknown statuses.
    let bad = sqlx::query("UPDATE sessions SET status = 'LOST' WHERE id = $1::uuid")
        .bind(&s.id)
        .execute(&app.pool)
        .await;
    assert!(bad.unwrap_err().to_string().contains("sessions_status_check"));
}

#[tokio::test]
async fn a_cancelled_session_gives_its_slot_back() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(10);
    let s = scheduled(&app, &w, t).await;
    // While the session stands, the slot is taken.
    assert_status(
        create(&app, booking_request(w.listing, w.mentee, t, t + Duration::hours(1))).await,
        Code::FailedPrecondition,
        "BOOKING_OVERLAP",
    );
    app.sessions()
        .cancel_session(authed(
            &w.mentee_token(),
            pb::CancelSessionRequest {
                session_id: s.id.clone(),
                reason: "cannot make it".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("cancel");
    let again = create(&app, booking_request(w.listing, w.mentee, t, t + Duration::hours(1)))
        .await
        .expect("rebook");
    let accepted = accept(&app, &again.id).await.expect("accept the rebooking");
    assert_eq!(
        accepted.session.expect("session").status(),
        pb::SessionStatus::Scheduled
    );
    let released: bool =
        sqlx::query_scalar("SELECT slot_released_at IS NOT NULL AND NOT holds_slot FROM bookings WHERE id = $1::uuid")
            .bind(&s.booking_id)
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert!(released);
}

#[tokio::test]
async fn a_booking_whose_start_has_passed_cannot_be_accepted() {
    let app = spawn_with(
        1,
        mentorship::app::Rules {
            booking_bounds: mentorship::domain::booking::DurationBounds {
                min: Duration::seconds(1),
                max: Duration::hours(8),
            },
            min_notice: Duration::zero(),
            ..Default::default()
        },
    )
    .await;
    let w = world(&app).await;
    let start = Utc::now() + Duration::milliseconds(300);
    let b = draft(&app, &w, start, start + Duration::minutes(30)).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_status(accept(&app, &b.id).await, Code::FailedPrecondition, "BOOKING_EXPIRED");
    assert_eq!(app.count("sessions").await, 0);
}
