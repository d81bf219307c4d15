//! RescheduleBooking: an ACCEPTED booking stays final; the meeting moves by
//! a new booking and session in one transaction, linked both ways.

use chrono::{DateTime, Duration, Utc};
use mentorship::grpc::pb::{self, BookingEventKind, BookingStatus, SessionStatus};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

fn reschedule(booking_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> pb::RescheduleBookingRequest {
    pb::RescheduleBookingRequest {
        booking_id: booking_id.into(),
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        reason: "moved".into(),
        request_id: String::new(),
    }
}

async fn booking_events(app: &TestApp, id: &str) -> Vec<pb::BookingEvent> {
    app.coordinator()
        .call(pb::ListBookingEventsRequest {
            booking_id: id.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("events")
        .events
}

/// The mentor moves an accepted meeting to a time that overlaps the old one:
/// a new ACCEPTED booking and SCHEDULED session, the old session CANCELLED
/// (RESCHEDULED), both pairs linked both ways, the old time free again and
/// the new one held.
#[tokio::test]
async fn the_mentor_moves_an_accepted_meeting_in_one_transaction() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(9);
    let old = scheduled(&app, &w, t).await;
    let old_booking = old.booking_id.clone();
    let moved = app
        .as_(&w.mentor_token())
        .call(reschedule(
            &old_booking,
            t + Duration::minutes(30),
            t + Duration::minutes(90),
        ))
        .await
        .expect("the mentor moves it");
    let new = moved.booking.expect("the new booking");
    let session = moved.session.expect("the new session");
    let previous = moved.rescheduled_booking.expect("the old booking");
    assert_eq!(new.status, BookingStatus::Accepted as i32);
    assert_eq!(new.rescheduled_from, old_booking);
    assert_eq!(
        (ts_of(&new.start_time), ts_of(&new.end_time)),
        (t + Duration::minutes(30), t + Duration::minutes(90))
    );
    assert_eq!(
        previous.status,
        BookingStatus::Accepted as i32,
        "an ACCEPTED booking stays final"
    );
    assert_eq!(previous.rescheduled_to, new.id);
    assert_eq!(session.status, SessionStatus::Scheduled as i32);
    assert_eq!((session.start_time, session.end_time), (new.start_time, new.end_time));
    assert_eq!(session.booking_id, new.id);
    assert_eq!(session.rescheduled_from, old.id);
    assert_eq!(new.session_id, session.id);
    let old_now = get_session(&app, &old.id).await;
    assert_eq!(old_now.status, SessionStatus::Cancelled as i32);
    assert_eq!(old_now.cancel_reason, "RESCHEDULED");
    assert_eq!(old_now.rescheduled_to, session.id);
    assert_eq!(
        (old_now.start_time, old_now.end_time),
        (old.start_time, old.end_time),
        "times never change"
    );
    let last = event_log(&app, &old.id).await.pop().expect("events");
    assert_eq!(
        (last.to_status, last.reason.as_str()),
        (SessionStatus::Cancelled as i32, "RESCHEDULED")
    );

    // The audit: the old booking records the move, the new one its making.
    let old_events = booking_events(&app, &old_booking).await;
    let kinds: Vec<i32> = old_events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.last(),
        Some(&(BookingEventKind::Rescheduled as i32)),
        "{old_events:?}"
    );
    let new_events = booking_events(&app, &new.id).await;
    assert_eq!(new_events.len(), 1);
    assert_eq!(new_events[0].to_status, BookingStatus::Accepted as i32);

    // The old time's first half is free again; the new time is held.
    let other = add_mentee(&app).await;
    let freed = app
        .coordinator()
        .create_booking(booking_request(w.listing, other, t, t + Duration::minutes(30)))
        .await
        .expect("draft in the freed half hour");
    accept(&app, &freed.id).await.expect("the old time is free");
    let clash = app
        .coordinator()
        .create_booking(booking_request(
            w.listing,
            other,
            t + Duration::minutes(60),
            t + Duration::minutes(120),
        ))
        .await;
    assert_status(clash, Code::FailedPrecondition, "BOOKING_OVERLAP");
}

/// The mentee asks; the old meeting stays in force until the mentor
/// accepts, and the acceptance swaps the two. One request at a time.
#[tokio::test]
async fn the_mentees_request_is_swapped_in_when_the_mentor_accepts_it() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(9);
    let old = scheduled(&app, &w, t).await;
    let mentee = app.as_(&w.mentee_token());
    // Half an hour later: the request may overlap the meeting it replaces.
    let asked = mentee
        .call(reschedule(
            &old.booking_id,
            t + Duration::minutes(30),
            t + Duration::minutes(90),
        ))
        .await
        .expect("the mentee asks");
    assert!(asked.session.is_none());
    let request = asked.booking.expect("the request");
    assert_eq!(request.status, BookingStatus::Draft as i32);
    assert_eq!(request.rescheduled_from, old.booking_id);
    assert_eq!(
        get_session(&app, &old.id).await.status,
        SessionStatus::Scheduled as i32,
        "still in force"
    );
    let again = mentee
        .call(reschedule(
            &old.booking_id,
            t + Duration::hours(4),
            t + Duration::hours(5),
        ))
        .await;
    assert_status(again, Code::FailedPrecondition, "RESCHEDULE_PENDING");

    let accepted = app
        .as_(&w.mentor_token())
        .accept_booking(&request.id)
        .await
        .expect("the mentor accepts the request");
    let new_session = accepted.session.expect("the new session");
    assert_eq!(new_session.rescheduled_from, old.id);
    assert_eq!(ts_of(&new_session.start_time), t + Duration::minutes(30));
    let old_now = get_session(&app, &old.id).await;
    assert_eq!(
        (old_now.status, old_now.cancel_reason.as_str()),
        (SessionStatus::Cancelled as i32, "RESCHEDULED")
    );
    assert_eq!(old_now.rescheduled_to, new_session.id);
    let old_booking = app
        .coordinator()
        .get_booking(&old.booking_id)
        .await
        .expect("old booking");
    assert_eq!(old_booking.rescheduled_to, request.id);
    assert_eq!(old_booking.status, BookingStatus::Accepted as i32);
    assert_eq!(app.count("sessions").await, 2);

    // A coordinator moves the new meeting in turn: a chain of links.
    let again = app
        .coordinator()
        .call(reschedule(&request.id, t + Duration::hours(3), t + Duration::hours(4)))
        .await
        .expect("a coordinator moves it");
    let third = again.session.expect("the third session");
    assert_eq!(third.rescheduled_from, new_session.id);
    assert_eq!(
        again.rescheduled_booking.expect("the moved one").rescheduled_to,
        again.booking.expect("the new one").id
    );
}

/// A request whose meeting is cancelled is cancelled with it; one whose
/// start passed unaccepted no longer blocks a new one.
#[tokio::test]
async fn a_request_ends_with_its_meeting_and_an_expired_one_blocks_nothing() {
    let app = spawn_with(1, fast_rules()).await;
    let w = world(&app).await;
    let t = monday_at(9);
    let old = scheduled(&app, &w, t).await;
    let mentee = app.as_(&w.mentee_token());
    // A request for a moment from now, left to expire.
    let soon = chrono::Utc::now() + Duration::milliseconds(800);
    let stale = mentee
        .call(reschedule(&old.booking_id, soon, soon + Duration::hours(1)))
        .await
        .expect("a request")
        .booking
        .expect("booking");
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let fresh = mentee
        .call(reschedule(
            &old.booking_id,
            t + Duration::hours(2),
            t + Duration::hours(3),
        ))
        .await
        .expect("an expired request does not block a new one")
        .booking
        .expect("booking");
    let stale = app.coordinator().get_booking(&stale.id).await.expect("stale");
    assert_eq!(stale.status, BookingStatus::Cancelled as i32);
    // The meeting is cancelled: so is the pending request.
    app.coordinator().cancel_session(&old.id, "ill").await.expect("cancel");
    let dropped = app.coordinator().get_booking(&fresh.id).await.expect("request");
    assert_eq!(
        (dropped.status, dropped.reason.as_str()),
        (BookingStatus::Cancelled as i32, "the session was cancelled")
    );
}

/// Declining or cancelling the request leaves the meeting as it was; a
/// request whose meeting starts (or is cancelled) is cancelled, saying why.
#[tokio::test]
async fn a_request_that_ends_otherwise_leaves_the_meeting_as_it_was() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(9);
    let old = scheduled(&app, &w, t).await;
    let mentee = app.as_(&w.mentee_token());
    let ask = async |h: i64| {
        mentee
            .call(reschedule(
                &old.booking_id,
                t + Duration::hours(h),
                t + Duration::hours(h + 1),
            ))
            .await
            .expect("a request")
            .booking
            .expect("booking")
    };
    let declined = ask(2).await;
    app.as_(&w.mentor_token())
        .decline_booking(&declined.id, "that day is full")
        .await
        .expect("declined");
    let cancelled = ask(3).await;
    mentee
        .cancel_booking(&cancelled.id, "never mind")
        .await
        .expect("cancelled");
    assert_eq!(get_session(&app, &old.id).await.status, SessionStatus::Scheduled as i32);

    // The meeting changes mentor with a request pending: the request was the
    // old mentor's to accept, and is cancelled.
    let pending = ask(4).await;
    let (elsewhere, _) = add_mentor(&app, "UTC", vec![]).await;
    app.coordinator()
        .call(pb::ReassignMentorRequest {
            session_id: old.id.clone(),
            mentor_id: elsewhere.to_string(),
            reason: "leave".into(),
            ..Default::default()
        })
        .await
        .expect("reassigned");
    let dropped = app.coordinator().get_booking(&pending.id).await.expect("request");
    assert_eq!(
        (dropped.status, dropped.reason.as_str()),
        (BookingStatus::Cancelled as i32, "the meeting's mentor changed")
    );

    // The meeting starts with a request pending: the request is cancelled.
    let pending = ask(5).await;
    app.coordinator().start_session(&old.id).await.expect("start");
    let dropped = app.coordinator().get_booking(&pending.id).await.expect("request");
    assert_eq!(dropped.status, BookingStatus::Cancelled as i32);
    assert_eq!(dropped.reason, "the session started");
    // And a meeting that has started cannot be moved.
    let late = app
        .coordinator()
        .call(reschedule(
            &old.booking_id,
            t + Duration::hours(6),
            t + Duration::hours(7),
        ))
        .await;
    assert_status(late, Code::FailedPrecondition, "INVALID_TRANSITION");
}

/// A DRAFT changes its time in place, with CreateBooking's checks and an
/// audit entry; its mentor cannot move it.
#[tokio::test]
async fn a_draft_moves_in_place_with_the_checks_of_create_booking() {
    let app = spawn_app().await;
    let (mentor, mentor_user) = add_mentor(&app, "UTC", vec![window(pb::DayOfWeek::Monday, "09:00", "17:00")]).await;
    let listing = add_listing(&app, Some(mentor)).await;
    let mentee = add_mentee(&app).await;
    let t = monday_at(9);
    let draft = app
        .coordinator()
        .create_booking(booking_request(listing, mentee, t, t + Duration::hours(1)))
        .await
        .expect("draft");
    let as_mentee = app.as_(&token(&["mentee"], mentee, None));
    let moved = as_mentee
        .call(reschedule(&draft.id, t + Duration::hours(2), t + Duration::hours(3)))
        .await
        .expect("the mentee moves its draft")
        .booking
        .expect("booking");
    assert_eq!(
        (moved.id.as_str(), moved.status),
        (draft.id.as_str(), BookingStatus::Draft as i32)
    );
    assert_eq!(ts_of(&moved.start_time), t + Duration::hours(2));
    let events = booking_events(&app, &draft.id).await;
    assert_eq!(
        events.last().expect("an entry").kind,
        BookingEventKind::TimeChanged as i32
    );
    let outside = as_mentee
        .call(reschedule(&draft.id, t + Duration::hours(8), t + Duration::hours(9)))
        .await;
    assert_status(outside, Code::FailedPrecondition, "OUTSIDE_AVAILABILITY");
    let soon = Utc::now() + Duration::minutes(10);
    let refused = assert_status(
        as_mentee
            .call(reschedule(&draft.id, soon, soon + Duration::hours(1)))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&refused), vec!["start_time"]);
    let by_mentor = app
        .as_(&token(&["mentor"], mentor_user, Some(mentor)))
        .call(reschedule(&draft.id, t + Duration::hours(4), t + Duration::hours(5)))
        .await;
    assert_status(by_mentor, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(
        booking_events(&app, &draft.id).await.len(),
        events.len(),
        "refusals change nothing"
    );
    let other_mentee = app.as_(&token(&["mentee"], Uuid::new_v4(), None));
    assert_status(
        other_mentee
            .call(reschedule(&draft.id, t + Duration::hours(4), t + Duration::hours(5)))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
}

/// Two replicas: two meetings moved to the same new time at once, or a
/// move racing a new booking's acceptance for it; exactly one wins, the
/// other gets BOOKING_OVERLAP and changes nothing.
#[tokio::test]
async fn racing_for_the_same_new_time_on_two_replicas_leaves_exactly_one_winner() {
    let app = spawn_replicas(2).await;
    let w = world(&app).await;
    let other = add_mentee(&app).await;
    let with_other = World {
        mentee: other,
        ..w.clone()
    };
    for round in 0..scale(8, 100) as i64 {
        let day = monday_at(6) + Duration::days(round);
        let target = (day + Duration::hours(10), day + Duration::hours(11));
        let a = scheduled(&app, &w, day).await;
        let b = scheduled(&app, &with_other, day + Duration::hours(2)).await;
        let move_to = |replica: usize, booking: String| {
            let caller = app.on(replica, &w.mentor_token());
            tokio::spawn(async move { caller.call(reschedule(&booking, target.0, target.1)).await })
        };
        let (ra, rb) = tokio::join!(move_to(0, a.booking_id.clone()), move_to(1, b.booking_id.clone()));
        let results = [ra.expect("join"), rb.expect("join")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        let loser = results.iter().position(|r| r.is_err()).expect("a loser");
        let loser_session = if loser == 0 { &a } else { &b };
        assert_status(
            results.into_iter().nth(loser).expect("loser"),
            Code::FailedPrecondition,
            "BOOKING_OVERLAP",
        );
        assert_eq!(
            get_session(&app, &loser_session.id).await.status,
            SessionStatus::Scheduled as i32,
            "the loser's meeting is untouched"
        );

        // A move racing a new booking's acceptance for another free hour.
        let target = (day + Duration::hours(14), day + Duration::hours(15));
        let rival = app
            .coordinator()
            .create_booking(booking_request(w.listing, add_mentee(&app).await, target.0, target.1))
            .await
            .expect("rival draft");
        let mover = app.on(0, &w.mentor_token());
        let moving = loser_session.booking_id.clone();
        let acceptor = app.on(1, &coordinator());
        let rival_id = rival.id.clone();
        let (rm, ra) = tokio::join!(
            tokio::spawn(async move { mover.call(reschedule(&moving, target.0, target.1)).await.map(|_| ()) }),
            tokio::spawn(async move { acceptor.accept_booking(&rival_id).await.map(|_| ()) }),
        );
        let results = [rm.expect("join"), ra.expect("join")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        let loser = results.into_iter().find(|r| r.is_err()).expect("a loser");
        assert_status(loser, Code::FailedPrecondition, "BOOKING_OVERLAP");
    }
}

/// Two replicas: the mentor accepts a mentee's request while a coordinator
/// cancels the meeting it would replace, or while another request's
/// meeting starts. Exactly one of each pair happens; the other is refused
/// as FAILED_PRECONDITION (never INTERNAL, never a deadlock), and the
/// outcome is consistent: a moved meeting has its successor, a cancelled
/// one has none.
#[tokio::test]
async fn accepting_a_request_racing_the_meeting_ending_leaves_one_outcome() {
    let app = spawn_replicas(2).await;
    let w = world(&app).await;
    for round in 0..scale(8, 100) as i64 {
        let day = monday_at(6) + Duration::days(round);
        let old = scheduled(&app, &w, day).await;
        let request = app
            .as_(&w.mentee_token())
            .call(reschedule(
                &old.booking_id,
                day + Duration::hours(2),
                day + Duration::hours(3),
            ))
            .await
            .expect("a request")
            .booking
            .expect("booking");
        let acceptor = app.on(0, &w.mentor_token());
        let canceller = app.on(1, &coordinator());
        let (request_id, session_id) = (request.id.clone(), old.id.clone());
        let (accepted, cancelled) = tokio::join!(
            tokio::spawn(async move { acceptor.accept_booking(&request_id).await.map(|_| ()) }),
            tokio::spawn(async move { canceller.cancel_session(&session_id, "ill").await.map(|_| ()) }),
        );
        let results = [accepted.expect("join"), cancelled.expect("join")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        for r in &results {
            if let Err(status) = r {
                assert_eq!(status.code(), Code::FailedPrecondition, "round {round}: {status:?}");
            }
        }
        let old_now = get_session(&app, &old.id).await;
        let request_now = app.coordinator().get_booking(&request.id).await.expect("request");
        if results[0].is_ok() {
            assert_eq!(old_now.cancel_reason, "RESCHEDULED");
            assert_eq!(request_now.status, BookingStatus::Accepted as i32);
        } else {
            assert_eq!(old_now.cancel_reason, "ill");
            assert_eq!(request_now.status, BookingStatus::Cancelled as i32);
            assert!(old_now.rescheduled_to.is_empty());
        }
    }
}
