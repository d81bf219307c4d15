//! DirectoryService: mentees, mentors (skills, capacity, zone, windows), listings.

use mentorship::grpc::pb::{self, DayOfWeek};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn mentors_keep_their_windows_and_report_capacity_and_active_sessions() {
    let app = spawn_app().await;
    let window = |day: DayOfWeek, start: &str, end: &str| pb::AvailabilityWindow {
        day_of_week: day as i32,
        start_local_time: start.into(),
        end_local_time: end.into(),
    };
    let (busy, _) = add_mentor(
        &app,
        "Europe/Berlin",
        vec![
            window(DayOfWeek::Monday, "09:00", "12:30"),
            window(DayOfWeek::Friday, "22:00", "24:00"),
        ],
    )
    .await;
    let mentor = app
        .directory()
        .get_mentor(authed(
            &token(&["mentee"], Uuid::new_v4(), None),
            pb::GetMentorRequest {
                mentor_id: busy.to_string(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .mentor
        .expect("mentor");
    assert_eq!(mentor.timezone, "Europe/Berlin");
    assert_eq!(mentor.max_concurrent_sessions, 3, "the configured default");
    let windows: Vec<(i32, &str, &str)> = mentor
        .availability
        .iter()
        .map(|w| (w.day_of_week, w.start_local_time.as_str(), w.end_local_time.as_str()))
        .collect();
    assert_eq!(windows, [(1, "09:00", "12:30"), (5, "22:00", "24:00")]);

    // A second mentor in another skill, not accepting sessions, with its own limit.
    let other = app
        .directory()
        .upsert_mentor(authed(
            &coordinator(),
            pb::UpsertMentorRequest {
                mentor: Some(pb::Mentor {
                    user_id: Uuid::new_v4().to_string(),
                    display_name: "Linus".into(),
                    skill_areas: vec!["kernel".into()],
                    max_concurrent_sessions: 5,
                    accepting_sessions: false,
                    timezone: "America/Los_Angeles".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("upsert")
        .into_inner()
        .mentor
        .expect("mentor");
    assert_eq!(other.max_concurrent_sessions, 5);

    // An ACTIVE session counts against the busy mentor.
    let w = World {
        mentee: add_mentee(&app).await,
        mentor: busy,
        mentor_user: Uuid::nil(),
        listing: add_listing(&app, Some(busy)).await,
    };
    on_demand(&app, &w, None).await.expect("session");
    let list = |req: pb::ListMentorsRequest| {
        let mut client = app.directory();
        async move {
            client
                .list_mentors(authed(&coordinator(), req))
                .await
                .expect("list")
                .into_inner()
        }
    };
    let rust = list(pb::ListMentorsRequest {
        skill_area: "rust".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(rust.mentors.len(), 1);
    assert_eq!(rust.mentors[0].id, busy.to_string());
    assert_eq!(rust.mentors[0].active_session_count, 1);
    let accepting = list(pb::ListMentorsRequest {
        accepting_sessions_only: true,
        ..Default::default()
    })
    .await;
    assert!(accepting.mentors.iter().all(|m| m.accepting_sessions));
    assert_eq!(accepting.mentors.len(), 1);

    // Pages of one, each mentor once.
    let mut seen = Vec::new();
    let mut token_ = String::new();
    loop {
        let page = list(pb::ListMentorsRequest {
            page_size: 1,
            page_token: token_.clone(),
            ..Default::default()
        })
        .await;
        seen.extend(page.mentors.into_iter().map(|m| m.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token_ = page.next_page_token;
    }
    seen.sort();
    let mut want = vec![busy.to_string(), other.id.clone()];
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn listings_with_and_without_a_mentor_and_ownership_of_upserts() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let story = add_listing(&app, None).await;
    let listings = app
        .directory()
        .list_listings(authed(
            &w.mentee_token(),
            pb::ListListingsRequest {
                mentor_id: w.mentor.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .listings;
    assert_eq!(
        listings.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        [w.listing.to_string()]
    );
    let fetched = app
        .directory()
        .get_listing(authed(
            &w.mentee_token(),
            pb::GetListingRequest {
                listing_id: story.to_string(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .listing
        .expect("listing");
    assert!(fetched.mentor_id.is_empty(), "a story has no mentor");

    // A mentor may create its own listing but not one for another mentor.
    let mine = app
        .directory()
        .upsert_listing(authed(
            &w.mentor_token(),
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: w.mentor.to_string(),
                    title: "Mine".into(),
                    skill_area: "rust".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert!(mine.is_ok());
    let (other_mentor, _) = add_mentor(&app, "UTC", vec![]).await;
    let theirs = app
        .directory()
        .upsert_listing(authed(
            &w.mentor_token(),
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: other_mentor.to_string(),
                    title: "Theirs".into(),
                    skill_area: "rust".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_status(theirs, Code::PermissionDenied, "PERMISSION_DENIED");
    // A listing naming an unknown mentor is NOT_FOUND and stores nothing.
    let before = app.count("listings").await;
    let ghost = app
        .directory()
        .upsert_listing(authed(
            &coordinator(),
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: Uuid::new_v4().to_string(),
                    title: "Ghost".into(),
                    skill_area: "rust".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_status(ghost, Code::NotFound, "MENTOR_NOT_FOUND");
    assert_eq!(app.count("listings").await, before);
    // Unknown mentee.
    let missing = app
        .directory()
        .get_mentee(authed(
            &coordinator(),
            pb::GetMenteeRequest {
                mentee_id: Uuid::new_v4().to_string(),
            },
        ))
        .await;
    assert_status(missing, Code::NotFound, "MENTEE_NOT_FOUND");
}
