//! The access matrix: every built RPC × every kind of caller → expected code.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Duration;
use mentorship::grpc::{auth::mint_hs256, pb};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
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

use Caller::*;

const CALLERS: [Caller; 10] = [
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

fn token_for(c: Caller, w: &World) -> String {
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
    GetSessionConfig,
    UpdateSessionConfig,
    ListConfigTemplates,
}

const RPCS: [Rpc; 28] = [
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
    Rpc::GetSessionConfig,
    Rpc::UpdateSessionConfig,
    Rpc::ListConfigTemplates,
];

/// The authenticated callers each RPC allows; other authenticated callers get PERMISSION_DENIED.
fn allowed(rpc: Rpc) -> &'static [Caller] {
    const EVERYONE: &[Caller] = &[OwnerMentee, OtherMentee, OwnerMentor, OtherMentor, Coordinator, Service];
    const READERS: &[Caller] = &[OwnerMentee, OwnerMentor, Coordinator, Service];
    match rpc {
        Rpc::UpsertMentee => &[OwnerMentee, Coordinator, Service],
        Rpc::GetMentee => &[OwnerMentee, OwnerMentor, OtherMentor, Coordinator, Service],
        Rpc::UpsertMentor | Rpc::UpsertListing => &[OwnerMentor, Coordinator, Service],
        Rpc::GetMentor | Rpc::ListMentors | Rpc::GetListing | Rpc::ListListings => EVERYONE,
        Rpc::ListBookings | Rpc::ListSessions => EVERYONE,
        Rpc::CreateBooking => &[OwnerMentee, Coordinator],
        Rpc::GetBooking | Rpc::GetSession | Rpc::ListSessionEvents => READERS,
        Rpc::AcceptBooking | Rpc::DeclineBooking => &[OwnerMentor, Coordinator],
        Rpc::CancelBooking => &[OwnerMentee, OwnerMentor, Coordinator],
        Rpc::StartSession => &[OwnerMentee, OwnerMentor, Coordinator],
        Rpc::CompleteSession => &[OwnerMentor, Coordinator, Service],
        Rpc::CreateSession => &[Coordinator, Service],
        // On an ACTIVE session (the transition table test covers every status).
        Rpc::PauseSession | Rpc::ResumeSession | Rpc::AdvanceStage => &[OwnerMentor, Coordinator, Service],
        Rpc::FailSession => &[Coordinator, Service],
        Rpc::CancelSession => &[OwnerMentor, Coordinator],
        Rpc::GetSessionConfig => READERS,
        Rpc::UpdateSessionConfig => &[OwnerMentor, Coordinator, Service],
        Rpc::ListConfigTemplates => EVERYONE,
    }
}

fn expected(rpc: Rpc, caller: Caller) -> Code {
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
    let (mut d, mut b, mut s) = (app.directory(), app.bookings(), app.sessions());
    match rpc {
        Rpc::UpsertMentee => d
            .upsert_mentee(authed(
                tok,
                pb::UpsertMenteeRequest {
                    mentee: Some(pb::Mentee {
                        id: w.mentee.to_string(),
                        display_name: "Ada L.".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(drop),
        Rpc::GetMentee => d
            .get_mentee(authed(
                tok,
                pb::GetMenteeRequest {
                    mentee_id: w.mentee.to_string(),
                },
            ))
            .await
            .map(drop),
        Rpc::UpsertMentor => d
            .upsert_mentor(authed(
                tok,
                pb::UpsertMentorRequest {
                    mentor: Some(pb::Mentor {
                        id: w.mentor.to_string(),
                        user_id: w.mentor_user.to_string(),
                        display_name: "Grace H.".into(),
                        timezone: "UTC".into(),
                        accepting_sessions: true,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(drop),
        Rpc::GetMentor => d
            .get_mentor(authed(
                tok,
                pb::GetMentorRequest {
                    mentor_id: w.mentor.to_string(),
                },
            ))
            .await
            .map(drop),
        Rpc::ListMentors => d
            .list_mentors(authed(tok, pb::ListMentorsRequest::default()))
            .await
            .map(drop),
        Rpc::UpsertListing => d
            .upsert_listing(authed(
                tok,
                pb::UpsertListingRequest {
                    listing: Some(pb::Listing {
                        id: w.listing.to_string(),
                        mentor_id: w.mentor.to_string(),
                        title: "Renamed".into(),
                        skill_area: "rust".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .map(drop),
        Rpc::GetListing => d
            .get_listing(authed(
                tok,
                pb::GetListingRequest {
                    listing_id: w.listing.to_string(),
                },
            ))
            .await
            .map(drop),
        Rpc::ListListings => d
            .list_listings(authed(tok, pb::ListListingsRequest::default()))
            .await
            .map(drop),
        Rpc::CreateBooking => {
            let t = next_slot();
            b.create_booking(authed(
                tok,
                booking_request(w.listing, w.mentee, t, t + Duration::hours(1)),
            ))
            .await
            .map(drop)
        }
        Rpc::GetBooking => {
            let booking = draft(app, w, next_slot(), next_slot()).await;
            b.get_booking(authed(tok, pb::GetBookingRequest { booking_id: booking.id }))
                .await
                .map(drop)
        }
        Rpc::ListBookings => b
            .list_bookings(authed(tok, pb::ListBookingsRequest::default()))
            .await
            .map(drop),
        Rpc::AcceptBooking => {
            let t = next_slot();
            let booking = draft(app, w, t, t + Duration::hours(1)).await;
            b.accept_booking(authed(
                tok,
                pb::AcceptBookingRequest {
                    booking_id: booking.id,
                    request_id: String::new(),
                },
            ))
            .await
            .map(drop)
        }
        Rpc::DeclineBooking => {
            let t = next_slot();
            let booking = draft(app, w, t, t + Duration::hours(1)).await;
            b.decline_booking(authed(
                tok,
                pb::DeclineBookingRequest {
                    booking_id: booking.id,
                    reason: "no".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .map(drop)
        }
        Rpc::CancelBooking => {
            let t = next_slot();
            let booking = draft(app, w, t, t + Duration::hours(1)).await;
            b.cancel_booking(authed(
                tok,
                pb::CancelBookingRequest {
                    booking_id: booking.id,
                    reason: "no".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .map(drop)
        }
        Rpc::GetSession => {
            let session = scheduled(app, w, next_slot()).await;
            s.get_session(authed(tok, pb::GetSessionRequest { session_id: session.id }))
                .await
                .map(drop)
        }
        Rpc::ListSessions => s
            .list_sessions(authed(tok, pb::ListSessionsRequest::default()))
            .await
            .map(drop),
        Rpc::StartSession => {
            let session = scheduled(app, w, next_slot()).await;
            s.start_session(authed(
                tok,
                pb::StartSessionRequest {
                    session_id: session.id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::CompleteSession => {
            let session = scheduled(app, w, next_slot()).await;
            s.start_session(authed(
                &coordinator(),
                pb::StartSessionRequest {
                    session_id: session.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("start");
            s.complete_session(authed(
                tok,
                pb::CompleteSessionRequest {
                    session_id: session.id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::CreateSession => s
            .create_session(authed(
                tok,
                pb::CreateSessionRequest {
                    mentee_id: w.mentee.to_string(),
                    listing_id: w.listing.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Rpc::PauseSession => {
            let session_id = active(app, w).await;
            s.pause_session(authed(
                tok,
                pb::PauseSessionRequest {
                    session_id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::ResumeSession => {
            let session_id = active(app, w).await;
            s.resume_session(authed(
                tok,
                pb::ResumeSessionRequest {
                    session_id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::FailSession => {
            let session_id = active(app, w).await;
            s.fail_session(authed(
                tok,
                pb::FailSessionRequest {
                    session_id,
                    error_message: "x".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::CancelSession => {
            let session_id = active(app, w).await;
            s.cancel_session(authed(
                tok,
                pb::CancelSessionRequest {
                    session_id,
                    reason: "x".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::AdvanceStage => {
            let session_id = active(app, w).await;
            s.advance_stage(authed(
                tok,
                pb::AdvanceStageRequest {
                    session_id,
                    stage: "review".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::GetSessionConfig => {
            let session_id = active(app, w).await;
            s.get_session_config(authed(tok, pb::GetSessionConfigRequest { session_id }))
                .await
                .map(drop)
        }
        Rpc::UpdateSessionConfig => {
            let session_id = active(app, w).await;
            s.update_session_config(authed(
                tok,
                pb::UpdateSessionConfigRequest {
                    session_id,
                    config: Some(pb::SessionConfig {
                        check_in_interval: Some(seconds(900)),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["check_in_interval".into()],
                    }),
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
        Rpc::ListConfigTemplates => s
            .list_config_templates(authed(tok, pb::ListConfigTemplatesRequest {}))
            .await
            .map(drop),
        Rpc::ListSessionEvents => {
            let session = scheduled(app, w, next_slot()).await;
            s.list_session_events(authed(
                tok,
                pb::ListSessionEventsRequest {
                    session_id: session.id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop)
        }
    }
}

/// A fresh ACTIVE session of the world.
async fn active(app: &TestApp, w: &World) -> String {
    let session = scheduled(app, w, next_slot()).await;
    app.sessions()
        .start_session(authed(
            &coordinator(),
            pb::StartSessionRequest {
                session_id: session.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("start");
    session.id
}

#[tokio::test]
async fn every_built_rpc_answers_every_kind_of_caller_as_specified() {
    let app = spawn_app().await;
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
    let list = |tok: String| {
        let mut client = app.bookings();
        async move {
            client
                .list_bookings(authed(&tok, pb::ListBookingsRequest::default()))
                .await
                .expect("list")
                .into_inner()
                .bookings
        }
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
