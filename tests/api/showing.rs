//! Reads a front end can show: names read with the rows, batch gets
//! (AIP-231), and a session's notes and metadata.

use mentorship::grpc::pb::{self, SessionEventType, SessionStatus};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// Sessions and bookings carry the mentee's and mentor's display names and
/// the listing's title, from every read: get, list, batch, and the
/// responses of changes.
#[tokio::test]
async fn sessions_and_bookings_carry_the_names_a_front_end_shows() {
    let app = spawn_app().await;
    let w = world(&app).await; // Ada, Grace, "Code review"
    let names = |mentee: &str, mentor: &str, title: &str| (mentee.to_owned(), mentor.to_owned(), title.to_owned());
    let expected = names("Ada", "Grace", "Code review");
    let b = draft(&app, &w, monday_at(9), monday_at(10)).await;
    assert_eq!(
        names(&b.mentee_display_name, &b.mentor_display_name, &b.listing_title),
        expected,
        "CreateBooking's response"
    );
    let accepted = accept(&app, &b.id).await.expect("accept");
    let s = accepted.session.expect("session");
    assert_eq!(
        names(&s.mentee_display_name, &s.mentor_display_name, &s.listing_title),
        expected
    );
    let listed = app
        .coordinator()
        .list_sessions(Default::default())
        .await
        .expect("list")
        .sessions;
    assert_eq!(
        names(
            &listed[0].mentee_display_name,
            &listed[0].mentor_display_name,
            &listed[0].listing_title
        ),
        expected
    );
    let got = get_session(&app, &s.id).await;
    assert_eq!(
        names(&got.mentee_display_name, &got.mentor_display_name, &got.listing_title),
        expected
    );
    let booking = app
        .coordinator()
        .list_bookings(Default::default())
        .await
        .expect("bookings")
        .bookings
        .remove(0);
    assert_eq!(
        names(
            &booking.mentee_display_name,
            &booking.mentor_display_name,
            &booking.listing_title
        ),
        expected
    );
    // A renamed mentee shows its new name on the next read.
    app.coordinator()
        .upsert_mentee(pb::Mentee {
            id: w.mentee.to_string(),
            display_name: "Ada L.".into(),
            ..Default::default()
        })
        .await
        .expect("rename");
    assert_eq!(get_session(&app, &s.id).await.mentee_display_name, "Ada L.");
    let started = app.coordinator().start_session(&s.id).await.expect("start");
    assert_eq!(started.mentor_display_name, "Grace", "a change's response too");
}

/// All or nothing, in the order asked; an unknown id or one the caller may
/// not see fails the call naming it.
#[tokio::test]
async fn batch_gets_are_all_or_nothing_and_name_the_id_that_fails() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let other = World {
        mentee: add_mentee(&app).await,
        ..w.clone()
    };
    let mine = [
        scheduled(&app, &w, monday_at(6)).await,
        scheduled(&app, &w, monday_at(8)).await,
    ];
    let theirs = scheduled(&app, &other, monday_at(10)).await;
    let ids = |ss: &[&pb::Session]| ss.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    let asked = ids(&[&mine[1], &theirs, &mine[0]]);
    let got = app
        .coordinator()
        .call(pb::BatchGetSessionsRequest {
            session_ids: asked.clone(),
        })
        .await
        .expect("a coordinator sees all");
    assert_eq!(
        ids(&got.sessions.iter().collect::<Vec<_>>()),
        asked,
        "in the order asked"
    );
    assert!(got.sessions.iter().all(|s| s.mentor_display_name == "Grace"));

    let mentee = app.as_(&w.mentee_token());
    let hidden = mentee
        .call(pb::BatchGetSessionsRequest {
            session_ids: asked.clone(),
        })
        .await;
    let status = assert_status(hidden, Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(status.message().contains(&theirs.id), "{}", status.message());
    let unknown = Uuid::new_v4().to_string();
    let missing = mentee
        .call(pb::BatchGetSessionsRequest {
            session_ids: vec![mine[0].id.clone(), unknown.clone()],
        })
        .await;
    let status = assert_status(missing, Code::NotFound, "SESSION_NOT_FOUND");
    assert!(status.message().contains(&unknown), "{}", status.message());
    let own = mentee
        .call(pb::BatchGetSessionsRequest {
            session_ids: ids(&[&mine[0], &mine[1]]),
        })
        .await
        .expect("its own");
    assert_eq!(own.sessions.len(), 2);

    // Bookings the same way.
    let booking_ids = vec![theirs.booking_id.clone(), mine[0].booking_id.clone()];
    let bookings = app
        .coordinator()
        .call(pb::BatchGetBookingsRequest {
            booking_ids: booking_ids.clone(),
        })
        .await
        .expect("bookings");
    assert_eq!(
        bookings.bookings.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
        booking_ids
    );
    assert_status(
        mentee.call(pb::BatchGetBookingsRequest { booking_ids }).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // Bad input: none, too many, a malformed one named by its index.
    for (ids, field) in [
        (vec![], "session_ids"),
        ((0..101).map(|_| Uuid::new_v4().to_string()).collect(), "session_ids"),
        (vec![mine[0].id.clone(), "nope".into()], "session_ids[1]"),
    ] {
        let status = assert_status(
            app.coordinator()
                .call(pb::BatchGetSessionsRequest { session_ids: ids })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), vec![field]);
    }
    let hundred = (0..100).map(|_| Uuid::new_v4().to_string()).collect();
    assert_status(
        app.coordinator()
            .call(pb::BatchGetSessionsRequest { session_ids: hundred })
            .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
}

fn notes_request(
    session_id: &str,
    paths: &[&str],
    notes: &str,
    metadata: Option<serde_json::Value>,
) -> pb::UpdateSessionNotesRequest {
    pb::UpdateSessionNotesRequest {
        session_id: session_id.into(),
        update_mask: Some(mask(paths)),
        notes: notes.into(),
        metadata: metadata.map(|m| mentorship::grpc::convert::json_to_struct(&m).expect("an object")),
        etag: String::new(),
        request_id: String::new(),
    }
}

/// Notes and metadata change under a field mask and the etag, by the
/// participants, coordinators and services; a NOTES_UPDATED event, no
/// status change; bounded like every text and Struct.
#[tokio::test]
async fn session_notes_and_metadata_change_without_a_lifecycle_change() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(9)).await;
    let mentee = app.as_(&w.mentee_token());
    let updated = mentee
        .call(notes_request(
            &s.id,
            &["notes", "metadata"],
            "bring the parser",
            Some(serde_json::json!({"room": "B2", "seats": 2})),
        ))
        .await
        .expect("the mentee writes notes")
        .session
        .expect("session");
    assert_eq!(updated.notes, "bring the parser");
    assert_eq!(
        mentorship::grpc::convert::struct_to_json(updated.metadata.as_ref().expect("metadata")),
        serde_json::json!({"room": "B2", "seats": 2.0})
    );
    assert_eq!(updated.status, SessionStatus::Scheduled as i32);
    let last = event_log(&app, &s.id).await.pop().expect("events");
    assert_eq!(last.r#type, SessionEventType::NotesUpdated as i32);
    assert_eq!(last.from_status, last.to_status);

    // Only what the mask names changes; the etag guards it.
    let by_mentor = app
        .as_(&w.mentor_token())
        .call(pb::UpdateSessionNotesRequest {
            etag: updated.etag.clone(),
            ..notes_request(
                &s.id,
                &["notes"],
                "and tests",
                Some(serde_json::json!({"ignored": true})),
            )
        })
        .await
        .expect("the mentor")
        .session
        .expect("session");
    assert_eq!(by_mentor.notes, "and tests");
    assert_eq!(by_mentor.metadata, updated.metadata);
    let stale = app
        .coordinator()
        .call(pb::UpdateSessionNotesRequest {
            etag: updated.etag.clone(),
            ..notes_request(&s.id, &["notes"], "late", None)
        })
        .await;
    assert_status(stale, Code::Aborted, "ETAG_MISMATCH");
    let service = app.as_(&service());
    service
        .call(notes_request(
            &s.id,
            &["metadata"],
            "",
            Some(serde_json::json!({"crm": "x1"})),
        ))
        .await
        .expect("a service");
    let stranger = app.as_(&token(&["mentee"], Uuid::new_v4(), None));
    assert_status(
        stranger.call(notes_request(&s.id, &["notes"], "mine now", None)).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // Bounds: 10,000 characters, a mask of known fields, Structs like the others.
    let before = event_log(&app, &s.id).await.len();
    for (req, field) in [
        (notes_request(&s.id, &["notes"], &"x".repeat(10_001), None), "notes"),
        (notes_request(&s.id, &["status"], "", None), "update_mask"),
        (notes_request(&s.id, &[], "", None), "update_mask"),
        (
            notes_request(
                &s.id,
                &["metadata"],
                "",
                Some(serde_json::json!({"blob": "x".repeat(70_000)})),
            ),
            "metadata",
        ),
    ] {
        let status = assert_status(
            app.coordinator().call(req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), vec![field]);
    }
    let fits = app
        .coordinator()
        .call(notes_request(&s.id, &["notes"], &"y".repeat(10_000), None))
        .await
        .expect("10,000 characters fit");
    assert_eq!(fits.session.expect("session").notes.chars().count(), 10_000);
    assert_eq!(event_log(&app, &s.id).await.len(), before + 1, "refusals write nothing");

    // A terminal session keeps taking notes (the meeting's minutes).
    app.coordinator()
        .cancel_session(&s.id, "moved online")
        .await
        .expect("cancel");
    app.coordinator()
        .call(notes_request(&s.id, &["notes"], "minutes: none", None))
        .await
        .expect("notes after the end");
}
