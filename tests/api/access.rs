//! The access matrix: every built RPC × every kind of caller → expected code.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Duration;
use mentorship::grpc::{auth::mint_hs256, pb};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    OwnerMentee,
    OtherMentee,
    OwnerMentor,
    OtherMentor,
    Coordinator,
    Service,
    NoToken,
    Expired,
    WrongSignature,
    UnknownRole,
}

use Who::*;

const CALLERS: [Who; 10] = [
    OwnerMentee,
    OtherMentee,
    OwnerMentor,
    OtherMentor,
    Coordinator,
    Service,
    NoToken,
    Expired,
    WrongSignature,
    UnknownRole,
];

fn token_for(c: Who, w: &World) -> String {
    match c {
        OwnerMentee => w.mentee_token(),
        OtherMentee => token(&["mentee"], Uuid::new_v4(), None),
        OwnerMentor => w.mentor_token(),
        OtherMentor => token(&["mentor"], Uuid::new_v4(), Some(Uuid::new_v4())),
        Coordinator => coordinator(),
        Service => service(),
        NoToken => String::new(),
        Expired => mint_hs256(
            SECRET,
            &claims(&["coordinator"], Uuid::new_v4(), None, Duration::hours(-1)),
        )
        .expect("mint"),
        WrongSignature => mint_hs256(
            b"not-the-server-secret-at-all!!",
            &claims(&["coordinator"], Uuid::new_v4(), None, Duration::hours(1)),
        )
        .expect("mint"),
        UnknownRole => token(&["superuser"], Uuid::new_v4(), None),
    }
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    UpsertMentee,
    GetMentee,
    UpsertMentor,
    GetMentor,
    ListMentors,
    UpsertListing,
    GetListing,
    ListListings,
    CreateBooking,
    GetBooking,
    ListBookings,
    AcceptBooking,
    DeclineBooking,
    CancelBooking,
    GetSession,
    ListSessions,
    StartSession,
    CompleteSession,
    ListSessionEvents,
    CreateSession,
    PauseSession,
    ResumeSession,
    FailSession,
    CancelSession,
    AdvanceStage,
    RecordCheckIn,
    GetSessionConfig,
    UpdateSessionConfig,
    ListConfigTemplates,
    GetSessionTimeline,
    CompareSessions,
    ListBookingEvents,
    ExportSessions,
    ListAvailableSlots,
    RescheduleBooking,
    BatchGetBookings,
    BatchGetSessions,
    UpdateSessionNotes,
}

const RPCS: [Rpc; 38] = [
    Rpc::UpsertMentee,
    Rpc::GetMentee,
    Rpc::UpsertMentor,
    Rpc::GetMentor,
    Rpc::ListMentors,
    Rpc::UpsertListing,
    Rpc::GetListing,
    Rpc::ListListings,
    Rpc::CreateBooking,
    Rpc::GetBooking,
    Rpc::ListBookings,
    Rpc::AcceptBooking,
    Rpc::DeclineBooking,
    Rpc::CancelBooking,
    Rpc::GetSession,
    Rpc::ListSessions,
    Rpc::StartSession,
    Rpc::CompleteSession,
    Rpc::ListSessionEvents,
    Rpc::CreateSession,
    Rpc::PauseSession,
    Rpc::ResumeSession,
    Rpc::FailSession,
    Rpc::CancelSession,
    Rpc::AdvanceStage,
    Rpc::RecordCheckIn,
    Rpc::GetSessionConfig,
    Rpc::UpdateSessionConfig,
    Rpc::ListConfigTemplates,
    Rpc::GetSessionTimeline,
    Rpc::CompareSessions,
    Rpc::ListBookingEvents,
    Rpc::ExportSessions,
    Rpc::ListAvailableSlots,
    Rpc::RescheduleBooking,
    Rpc::BatchGetBookings,
    Rpc::BatchGetSessions,
    Rpc::UpdateSessionNotes,
];

/// The authenticated callers each RPC allows; other authenticated callers get PERMISSION_DENIED.
fn allowed(rpc: Rpc) -> &'static [Who] {
    const EVERYONE: &[Who] = &[OwnerMentee, OtherMentee, OwnerMentor, OtherMentor, Coordinator, Service];
    const READERS: &[Who] = &[OwnerMentee, OwnerMentor, Coordinator, Service];
    match rpc {
        Rpc::UpsertMentee => &[OwnerMentee, Coordinator, Service],
        Rpc::GetMentee => &[OwnerMentee, OwnerMentor, OtherMentor, Coordinator, Service],
        Rpc::UpsertMentor | Rpc::UpsertListing => &[OwnerMentor, Coordinator, Service],
        Rpc::GetMentor | Rpc::ListMentors | Rpc::GetListing | Rpc::ListListings => EVERYONE,
        Rpc::ListBookings | Rpc::ListSessions | Rpc::ExportSessions => EVERYONE,
        Rpc::CreateBooking => &[OwnerMentee, Coordinator],
        Rpc::GetBooking | Rpc::GetSession | Rpc::ListSessionEvents | Rpc::ListBookingEvents => READERS,
        Rpc::GetSessionTimeline | Rpc::CompareSessions => READERS,
        Rpc::AcceptBooking | Rpc::DeclineBooking => &[OwnerMentor, Coordinator],
        Rpc::CancelBooking => &[OwnerMentee, OwnerMentor, Coordinator],
        Rpc::StartSession => &[OwnerMentee, OwnerMentor, Coordinator],
        Rpc::CompleteSession => &[OwnerMentor, Coordinator, Service],
        Rpc::CreateSession => &[Coordinator, Service],
        // On an ACTIVE session (the transition table test covers every status).
        Rpc::PauseSession | Rpc::ResumeSession | Rpc::AdvanceStage => &[OwnerMentor, Coordinator, Service],
        Rpc::RecordCheckIn => &[OwnerMentee, OwnerMentor, Coordinator, Service],
        Rpc::FailSession => &[Coordinator, Service],
        Rpc::CancelSession => &[OwnerMentor, Coordinator],
        Rpc::GetSessionConfig => READERS,
        Rpc::UpdateSessionConfig => &[OwnerMentor, Coordinator, Service],
        Rpc::ListConfigTemplates | Rpc::ListAvailableSlots => EVERYONE,
        // On a DRAFT: its mentee or a coordinator moves it; its mentor accepts or declines it.
        Rpc::RescheduleBooking => &[OwnerMentee, Coordinator],
        Rpc::BatchGetBookings | Rpc::BatchGetSessions => READERS,
        Rpc::UpdateSessionNotes => &[OwnerMentee, OwnerMentor, Coordinator, Service],
    }
}

fn expected(rpc: Rpc, caller: Who) -> Code {
    match caller {
        NoToken | Expired | WrongSignature => Code::Unauthenticated,
        UnknownRole => Code::PermissionDenied,
        c if allowed(rpc).contains(&c) => Code::Ok,
        _ => Code::PermissionDenied,
    }
}

/// Distinct future slots, so bookings made by the matrix never overlap.
static SLOT: AtomicI64 = AtomicI64::new(0);

fn next_slot() -> chrono::DateTime<chrono::Utc> {
    monday_at(0) + Duration::hours(2 * SLOT.fetch_add(1, Ordering::Relaxed))
}

async fn call(app: &TestApp, w: &World, rpc: Rpc, tok: &str) -> Result<(), Status> {
    let c = app.as_(tok);
    let (mentee, mentor, listing) = (w.mentee.to_string(), w.mentor.to_string(), w.listing.to_string());
    match rpc {
        Rpc::UpsertMentee => c
            .upsert_mentee(pb::Mentee {
                id: mentee,
                display_name: "Ada L.".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetMentee => c.get_mentee(&mentee).await.map(drop),
        Rpc::UpsertMentor => c
            .upsert_mentor(pb::Mentor {
                id: mentor,
                user_id: w.mentor_user.to_string(),
                display_name: "Grace H.".into(),
                timezone: "UTC".into(),
                accepting_sessions: true,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetMentor => c.get_mentor(&mentor).await.map(drop),
        Rpc::ListMentors => c.list_mentors(Default::default()).await.map(drop),
        Rpc::UpsertListing => c
            .upsert_listing(pb::Listing {
                id: listing,
                mentor_id: mentor,
                title: "Renamed".into(),
                skill_area: "rust".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetListing => c.get_listing(&listing).await.map(drop),
        Rpc::ListListings => c.list_listings(Default::default()).await.map(drop),
        Rpc::CreateBooking => {
            let t = next_slot();
            c.create_booking(booking_request(w.listing, w.mentee, t, t + Duration::hours(1)))
                .await
                .map(drop)
        }
        Rpc::GetBooking => c.get_booking(&fresh_draft(app, w).await).await.map(drop),
        Rpc::ListBookings => c.list_bookings(Default::default()).await.map(drop),
        Rpc::AcceptBooking => c.accept_booking(&fresh_draft(app, w).await).await.map(drop),
        Rpc::DeclineBooking => c.decline_booking(&fresh_draft(app, w).await, "no").await.map(drop),
        Rpc::CancelBooking => c.cancel_booking(&fresh_draft(app, w).await, "no").await.map(drop),
        Rpc::GetSession => c.get_session(&scheduled(app, w, next_slot()).await.id).await.map(drop),
        Rpc::ListSessions => c.list_sessions(Default::default()).await.map(drop),
        Rpc::StartSession => c
            .start_session(&scheduled(app, w, next_slot()).await.id)
            .await
            .map(drop),
        Rpc::CompleteSession => c.complete_session(&active(app, w).await, None).await.map(drop),
        Rpc::CreateSession => c
            .create_session(pb::CreateSessionRequest {
                mentee_id: mentee,
                listing_id: listing,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::PauseSession => c.pause_session(&active(app, w).await, "").await.map(drop),
        Rpc::ResumeSession => c.resume_session(&active(app, w).await).await.map(drop),
        Rpc::FailSession => c.fail_session(&active(app, w).await, "x", None).await.map(drop),
        Rpc::CancelSession => c.cancel_session(&active(app, w).await, "x").await.map(drop),
        Rpc::AdvanceStage => c.advance_stage(&active(app, w).await, "review").await.map(drop),
        Rpc::RecordCheckIn => c.record_check_in(&active(app, w).await, "note", false).await.map(drop),
        Rpc::GetSessionConfig => c.get_session_config(&active(app, w).await).await.map(drop),
        Rpc::UpdateSessionConfig => {
            let config = pb::SessionConfig {
                check_in_interval: Some(seconds(900)),
                ..Default::default()
            };
            c.update_session_config(&active(app, w).await, config, &["check_in_interval"])
                .await
                .map(drop)
        }
        Rpc::ListConfigTemplates => c.list_config_templates().await.map(drop),
        Rpc::ListSessionEvents => c
            .list_session_events(&scheduled(app, w, next_slot()).await.id, 0, "")
            .await
            .map(drop),
        Rpc::GetSessionTimeline => c
            .call(pb::GetSessionTimelineRequest {
                session_id: scheduled(app, w, next_slot()).await.id,
            })
            .await
            .map(drop),
        Rpc::CompareSessions => {
            let (a, b) = (active(app, w).await, active(app, w).await);
            c.call(pb::CompareSessionsRequest {
                first_session_id: a,
                second_session_id: b,
            })
            .await
            .map(drop)
        }
        Rpc::ExportSessions => {
            let req = authed(tok, pb::ExportSessionsRequest::default());
            let mut stream = app.sessions().export_sessions(req).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Rpc::ListAvailableSlots => c
            .call(pb::ListAvailableSlotsRequest {
                calendar: Some(pb::list_available_slots_request::Calendar::MentorId(mentor)),
                start_time: Some(ts(monday_at(0))),
                end_time: Some(ts(monday_at(0) + Duration::days(1))),
                slot_duration: Some(seconds(3600)),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RescheduleBooking => {
            let t = next_slot();
            c.call(pb::RescheduleBookingRequest {
                booking_id: fresh_draft(app, w).await,
                start_time: Some(ts(t)),
                end_time: Some(ts(t + Duration::hours(1))),
                ..Default::default()
            })
            .await
            .map(drop)
        }
        Rpc::BatchGetBookings => c
            .call(pb::BatchGetBookingsRequest {
                booking_ids: vec![fresh_draft(app, w).await],
            })
            .await
            .map(drop),
        Rpc::BatchGetSessions => c
            .call(pb::BatchGetSessionsRequest {
                session_ids: vec![scheduled(app, w, next_slot()).await.id],
            })
            .await
            .map(drop),
        Rpc::UpdateSessionNotes => c
            .call(pb::UpdateSessionNotesRequest {
                session_id: scheduled(app, w, next_slot()).await.id,
                update_mask: Some(mask(&["notes"])),
                notes: "agenda".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::ListBookingEvents => c
            .call(pb::ListBookingEventsRequest {
                booking_id: fresh_draft(app, w).await,
                ..Default::default()
            })
            .await
            .map(drop),
    }
}

/// A fresh DRAFT booking of the world; returns its id.
async fn fresh_draft(app: &TestApp, w: &World) -> String {
    let t = next_slot();
    draft(app, w, t, t + Duration::hours(1)).await.id
}

/// A fresh ACTIVE session of the world; returns its id.
async fn active(app: &TestApp, w: &World) -> String {
    let session = scheduled(app, w, next_slot()).await;
    app.coordinator().start_session(&session.id).await.expect("start");
    session.id
}

#[tokio::test]
async fn every_built_rpc_answers_every_kind_of_caller_as_specified() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let mut mismatches = Vec::new();
    for rpc in RPCS {
        for caller in CALLERS {
            let got = match call(&app, &w, rpc, &token_for(caller, &w)).await {
                Ok(()) => Code::Ok,
                Err(status) => status.code(),
            };
            let want = expected(rpc, caller);
            if got != want {
                mismatches.push(format!("{rpc:?} as {caller:?}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "access matrix mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn participants_only_list_their_own_bookings() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let other = World {
        mentee: add_mentee(&app).await,
        ..w.clone()
    };
    draft(&app, &w, monday_at(9), monday_at(10)).await;
    draft(&app, &other, monday_at(11), monday_at(12)).await;
    let list = async |tok: String| {
        app.as_(&tok)
            .list_bookings(Default::default())
            .await
            .expect("list")
            .bookings
    };
    let mine = list(w.mentee_token()).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].mentee_id, w.mentee.to_string());
    assert_eq!(list(w.mentor_token()).await.len(), 2);
    assert_eq!(list(coordinator()).await.len(), 2);
    assert!(
        list(token(&["mentor"], Uuid::new_v4(), Some(Uuid::new_v4())))
            .await
            .is_empty()
    );
}

/// A mentor token acts as its profile only when the profile is its `sub`'s:
/// one naming another user's profile is refused after the role check and
/// the request's validity (MENTOR_IDENTITY_MISMATCH), changes nothing and
/// is audited as no one; a token for a profile that does not exist sees
/// nothing; and a mentor never changes its profile's user_id.
#[tokio::test]
async fn a_mentor_token_must_be_its_profiles_user() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let booking = draft(&app, &w, monday_at(9), monday_at(10)).await;
    let impostor = token(&["mentor"], Uuid::new_v4(), Some(w.mentor));
    let as_impostor = app.as_(&impostor);
    let before = app.stored_counts().await;

    // Ownership: every call that reaches the rows is refused, reads and writes.
    assert_status(
        as_impostor.get_booking(&booking.id).await,
        Code::PermissionDenied,
        "MENTOR_IDENTITY_MISMATCH",
    );
    assert_status(
        as_impostor.list_bookings(Default::default()).await,
        Code::PermissionDenied,
        "MENTOR_IDENTITY_MISMATCH",
    );
    assert_status(
        as_impostor.accept_booking(&booking.id).await,
        Code::PermissionDenied,
        "MENTOR_IDENTITY_MISMATCH",
    );
    // The role check and the request's validity come first.
    assert_status(
        as_impostor.call(pb::ReassignMentorRequest::default()).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        as_impostor.get_booking("not-a-uuid").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(app.stored_counts().await, before, "a refused call changes nothing");
    assert_eq!(
        app.coordinator().get_booking(&booking.id).await.expect("get").status,
        pb::BookingStatus::Draft as i32
    );

    // The profile's own user acts as before.
    app.as_(&w.mentor_token())
        .accept_booking(&booking.id)
        .await
        .expect("the profile's user accepts");

    // A profile that does not exist yet is no one's: its token sees nothing.
    let unborn = token(&["mentor"], Uuid::new_v4(), Some(Uuid::new_v4()));
    let seen = app.as_(&unborn).list_bookings(Default::default()).await.expect("list");
    assert!(seen.bookings.is_empty(), "{:?}", seen.bookings);
    assert_status(
        app.as_(&unborn).get_booking(&booking.id).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // A mentor may not hand its profile to another user.
    let own = app
        .coordinator()
        .get_mentor(&w.mentor.to_string())
        .await
        .expect("mentor");
    let handed = app
        .as_(&w.mentor_token())
        .upsert_mentor(pb::Mentor {
            user_id: Uuid::new_v4().to_string(),
            ..own.clone()
        })
        .await;
    assert_status(handed, Code::PermissionDenied, "PERMISSION_DENIED");
    let after = app
        .coordinator()
        .get_mentor(&w.mentor.to_string())
        .await
        .expect("mentor");
    assert_eq!(after.user_id, w.mentor_user.to_string());
}
