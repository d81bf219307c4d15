//! Mentor assignment (SPEC §4.3): strategies, preferred mentors, mentors who
//! do not accept sessions, ReassignMentor and the assignment history.

use chrono::Duration;
use mentorship::{
    app::Rules,
    domain::{
        assignment::{Assignment, Strategy},
        capacity::Limits,
    },
    grpc::pb::{self, SessionEventType, SessionStatus},
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

fn rules(strategy: Strategy, fallback_to_auto: bool) -> Rules {
    Rules {
        assignment: Assignment {
            strategy,
            fallback_to_auto,
        },
        limits: Limits {
            per_mentee: 1,
            system: 1000,
            queue: 100,
        },
        ..Rules::default()
    }
}

/// A mentor in `skills` with its own limit; returns its id.
async fn mentor(app: &TestApp, skills: &[&str], limit: i32, accepting: bool) -> Uuid {
    app.coordinator()
        .upsert_mentor(pb::Mentor {
            user_id: Uuid::new_v4().to_string(),
            display_name: "Grace".into(),
            skill_areas: skills.iter().map(|s| s.to_string()).collect(),
            max_concurrent_sessions: limit,
            accepting_sessions: accepting,
            timezone: "UTC".into(),
            ..Default::default()
        })
        .await
        .expect("mentor")
        .id
        .parse()
        .expect("uuid")
}

async fn story(app: &TestApp, skill: &str) -> Uuid {
    app.coordinator()
        .upsert_listing(pb::Listing {
            title: "An open work item".into(),
            skill_area: skill.into(),
            ..Default::default()
        })
        .await
        .expect("listing")
        .id
        .parse()
        .expect("uuid")
}

async fn create(app: &TestApp, listing: Uuid, preferred: Option<Uuid>) -> Result<pb::Session, tonic::Status> {
    let mentee = add_mentee(app).await;
    app.coordinator()
        .create_session(pb::CreateSessionRequest {
            mentee_id: mentee.to_string(),
            listing_id: listing.to_string(),
            mentor_id: preferred.map(|m| m.to_string()).unwrap_or_default(),
            ..Default::default()
        })
        .await
}

async fn history(app: &TestApp, session_id: &str) -> Vec<pb::MentorAssignment> {
    app.coordinator()
        .call(pb::ListMentorAssignmentsRequest {
            session_id: session_id.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("assignments")
        .assignments
}

#[tokio::test]
async fn workload_balanced_assignment_picks_the_least_busy_mentor_who_accepts_sessions() {
    let app = spawn_with(1, rules(Strategy::WorkloadBalanced, true)).await;
    let busy = mentor(&app, &["go"], 3, true).await;
    let idle = mentor(&app, &["rust", "go"], 3, true).await;
    let _closed = mentor(&app, &["go"], 3, false).await;
    let _other_skill = mentor(&app, &["kernel"], 3, true).await;
    let listing = story(&app, "go").await;
    // The busy mentor has one session already.
    create(&app, listing, Some(busy)).await.expect("preferred");

    let s = create(&app, listing, None).await.expect("assigned");
    assert_eq!(s.mentor_id, idle.to_string(), "fewest sessions");
    // Now both hold one: the least recently assigned goes next.
    let s2 = create(&app, listing, None).await.expect("assigned");
    assert_eq!(s2.mentor_id, busy.to_string(), "ties go to the least recently assigned");

    // The first assignment is in the history and in the CREATED event.
    let rows = history(&app, &s.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].mentor_id.as_str(),
            rows[0].strategy.as_str(),
            rows[0].previous_mentor_id.as_str()
        ),
        (idle.to_string().as_str(), "workload_balanced", "")
    );
    let created = &event_log(&app, &s.id).await[0];
    let details = mentorship::grpc::convert::struct_to_json(created.details.as_ref().expect("details"));
    assert_eq!(details["assignment"]["strategy"], "workload_balanced");
    assert_eq!(details["assignment"]["mentor_id"], idle.to_string());
}

#[tokio::test]
async fn round_robin_and_skill_matched_follow_their_rules() {
    let app = spawn_with(1, rules(Strategy::SkillMatched, true)).await;
    let generalist = mentor(&app, &["rust", "kernel", "go"], 3, true).await;
    let specialist = mentor(&app, &["go"], 3, true).await;
    let listing = story(&app, "go").await;
    create(&app, listing, Some(specialist)).await.expect("busy specialist");
    let s = create(&app, listing, None).await.expect("assigned");
    assert_eq!(
        s.mentor_id,
        specialist.to_string(),
        "the specialist despite its workload"
    );
    let _ = generalist;

    let app = spawn_with(1, rules(Strategy::RoundRobin, true)).await;
    let first = mentor(&app, &["go"], 3, true).await;
    let second = mentor(&app, &["go"], 3, true).await;
    let listing = story(&app, "go").await;
    let a = create(&app, listing, None).await.expect("a");
    let b = create(&app, listing, None).await.expect("b");
    let c = create(&app, listing, None).await.expect("c");
    assert_ne!(a.mentor_id, b.mentor_id, "each in turn");
    assert_eq!(a.mentor_id, c.mentor_id, "and round again");
    assert!([first.to_string(), second.to_string()].contains(&a.mentor_id));
}

#[tokio::test]
async fn a_full_preferred_mentor_falls_back_only_with_fallback_to_auto() {
    for fallback in [true, false] {
        let app = spawn_with(1, rules(Strategy::WorkloadBalanced, fallback)).await;
        let preferred = mentor(&app, &["go"], 1, true).await;
        let free = mentor(&app, &["go"], 3, true).await;
        let listing = story(&app, "go").await;
        create(&app, listing, Some(preferred))
            .await
            .expect("fills the preferred mentor");
        let s = create(&app, listing, Some(preferred)).await.expect("second");
        if fallback {
            assert_eq!(
                (s.mentor_id.clone(), s.status()),
                (free.to_string(), SessionStatus::Active)
            );
            assert_eq!(history(&app, &s.id).await[0].strategy, "workload_balanced");
        } else {
            assert_eq!(
                (s.mentor_id.clone(), s.status()),
                (preferred.to_string(), SessionStatus::Queued),
                "queues for the preferred mentor"
            );
            assert_eq!(history(&app, &s.id).await[0].strategy, "request");
        }
    }
}

#[tokio::test]
async fn a_mentor_who_does_not_accept_sessions_gets_no_bookings_and_no_assignments() {
    let app = spawn_with(1, rules(Strategy::WorkloadBalanced, false)).await;
    let closed = mentor(&app, &["go"], 3, false).await;
    let listing = add_listing(&app, Some(closed)).await;
    let mentee = add_mentee(&app).await;
    let t = monday_at(10);
    let booking = app
        .coordinator()
        .create_booking(booking_request(listing, mentee, t, t + Duration::hours(1)))
        .await;
    assert_status(booking, Code::FailedPrecondition, "MENTOR_NOT_ACCEPTING");
    assert_status(
        create(&app, listing, None).await,
        Code::FailedPrecondition,
        "MENTOR_NOT_ACCEPTING",
    );
    let go = story(&app, "go").await;
    assert_status(
        create(&app, go, None).await,
        Code::FailedPrecondition,
        "NO_ELIGIBLE_MENTOR",
    );
    assert_status(
        create(&app, go, Some(closed)).await,
        Code::FailedPrecondition,
        "MENTOR_NOT_ACCEPTING",
    );
    assert_eq!(app.count("sessions").await, 0);
}

#[tokio::test]
async fn reassignment_moves_slots_bookings_and_history() {
    let app = spawn_with(1, rules(Strategy::WorkloadBalanced, false)).await;
    let c = app.coordinator();
    let m = mentor(&app, &["go"], 1, true).await;
    let n = mentor(&app, &["go"], 1, true).await;
    let listing = add_listing(&app, Some(m)).await;
    let active = create(&app, listing, None).await.expect("active on M");
    let waiting = create(&app, listing, None).await.expect("queued for M");
    assert_eq!(waiting.status(), SessionStatus::Queued);

    // ACTIVE moves to N, which has a free slot; M's slot goes to its queue.
    let moved = c
        .call(pb::ReassignMentorRequest {
            session_id: active.id.clone(),
            mentor_id: n.to_string(),
            reason: "M is on leave".into(),
            ..Default::default()
        })
        .await
        .expect("reassign")
        .session
        .expect("session");
    assert_eq!(
        (moved.mentor_id.clone(), moved.status()),
        (n.to_string(), SessionStatus::Active)
    );
    assert_eq!(get_session(&app, &waiting.id).await.status(), SessionStatus::Active);
    let events = event_log(&app, &active.id).await;
    let last = events.last().expect("event");
    assert_eq!(last.r#type(), SessionEventType::MentorAssigned);
    assert_eq!(last.reason, "M is on leave");
    let rows = history(&app, &active.id).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[1].previous_mentor_id.as_str(),
            rows[1].mentor_id.as_str(),
            rows[1].strategy.as_str()
        ),
        (m.to_string().as_str(), n.to_string().as_str(), "reassigned")
    );

    // Back to M, now full again: refused, nothing changes.
    let full = c
        .call(pb::ReassignMentorRequest {
            session_id: active.id.clone(),
            mentor_id: m.to_string(),
            reason: "back".into(),
            ..Default::default()
        })
        .await;
    assert_status(full, Code::FailedPrecondition, "MENTOR_FULL");
    assert_eq!(history(&app, &active.id).await.len(), 2);

    // A SCHEDULED session's booking moves too; the new mentor's time must be free.
    let mentee = add_mentee(&app).await;
    let other = add_mentee(&app).await;
    let n_listing = add_listing(&app, Some(n)).await;
    let t = monday_at(10);
    let on_n = c
        .create_booking(booking_request(n_listing, other, t, t + Duration::hours(1)))
        .await
        .expect("booking on N");
    accept(&app, &on_n.id).await.expect("accept on N");
    let on_m = c
        .create_booking(booking_request(listing, mentee, t, t + Duration::hours(1)))
        .await
        .expect("booking on M");
    let scheduled = accept(&app, &on_m.id).await.expect("accept").session.expect("session");
    let clash = c
        .call(pb::ReassignMentorRequest {
            session_id: scheduled.id.clone(),
            mentor_id: n.to_string(),
            reason: "swap".into(),
            ..Default::default()
        })
        .await;
    assert_status(clash, Code::FailedPrecondition, "BOOKING_OVERLAP");
    let later = monday_at(14);
    let on_m_later = c
        .create_booking(booking_request(listing, mentee, later, later + Duration::hours(1)))
        .await
        .expect("later booking");
    let later_session = accept(&app, &on_m_later.id)
        .await
        .expect("accept")
        .session
        .expect("session");
    c.call(pb::ReassignMentorRequest {
        session_id: later_session.id.clone(),
        mentor_id: n.to_string(),
        reason: "swap".into(),
        ..Default::default()
    })
    .await
    .expect("reassign a scheduled session");
    assert_eq!(
        c.get_booking(&on_m_later.id).await.expect("booking").mentor_id,
        n.to_string()
    );

    // Terminal sessions keep their mentor; only coordinators and services reassign.
    c.cancel_session(&later_session.id, "done").await.expect("cancel");
    let terminal = c
        .call(pb::ReassignMentorRequest {
            session_id: later_session.id.clone(),
            mentor_id: m.to_string(),
            reason: "late".into(),
            ..Default::default()
        })
        .await;
    assert_status(terminal, Code::FailedPrecondition, "SESSION_TERMINAL");
    let by_mentor = app
        .as_(&token(&["mentor"], Uuid::new_v4(), Some(m)))
        .call(pb::ReassignMentorRequest::default())
        .await;
    assert_status(by_mentor, Code::PermissionDenied, "PERMISSION_DENIED");
}

/// Two replicas assign at once: no mentor ever goes over its limit.
#[tokio::test]
async fn two_replicas_assigning_at_once_never_put_a_mentor_over_its_limit() {
    let app = spawn_with(2, rules(Strategy::WorkloadBalanced, true)).await;
    let mentors = [
        mentor(&app, &["go"], 1, true).await,
        mentor(&app, &["go"], 1, true).await,
        mentor(&app, &["go"], 1, true).await,
    ];
    let listing = story(&app, "go").await;
    let mut mentees = Vec::new();
    for _ in 0..scale(9, 40) {
        mentees.push(add_mentee(&app).await);
    }
    let pairs: Vec<(Uuid, Uuid)> = mentees.iter().map(|mentee| (*mentee, listing)).collect();
    for created in create_sessions_at_once(&app, &pairs).await {
        created.expect("assigned, active or queued");
    }
    for m in mentors {
        let holding = slots_held(&app, "mentor_id", m).await;
        assert!(holding <= 1, "mentor {m} holds {holding}");
    }
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE status = 'ACTIVE'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert!((1..=3).contains(&active), "{active}");
}

/// A mentor in `skill` with these windows in `zone`.
async fn mentor_in(app: &TestApp, skill: &str, zone: &str, availability: Vec<pb::AvailabilityWindow>) -> Uuid {
    app.coordinator()
        .upsert_mentor(pb::Mentor {
            user_id: Uuid::new_v4().to_string(),
            display_name: "Grace".into(),
            skill_areas: vec![skill.into()],
            accepting_sessions: true,
            timezone: zone.into(),
            availability,
            ..Default::default()
        })
        .await
        .expect("mentor")
        .id
        .parse()
        .expect("uuid")
}

/// Auto-assignment picks only mentors available now: inside one of their
/// weekly windows on their own clock, and not in an ACCEPTED booking. The
/// clocks are read with each zone's offset of the day: New York keeps
/// standard time in one half of the year and daylight time in the other,
/// Sydney the other way round, and a mentor whose window is open only on
/// the other season's clock is not picked (the rule at the instant of a
/// change itself: `availability::tests::a_mentor_is_open_at_an_instant_by_its_own_clock_across_dst`).
/// A mentor the caller names is not checked.
#[tokio::test]
async fn auto_assignment_picks_only_mentors_available_now() {
    use chrono::{Datelike, Offset, TimeZone, Timelike};
    let app = spawn_with(1, fast_rules()).await;
    let skill = format!("calendar-{}", Uuid::new_v4().simple());
    let now = chrono::Utc::now();
    // A window of about 50 minutes around now, on the clock of `zone` moved
    // `shift_hours` ahead (0: the true clock).
    let around = |zone: &str, shift_hours: i64| {
        let tz: chrono_tz::Tz = zone.parse().expect("zone");
        let local = (now + Duration::hours(shift_hours)).with_timezone(&tz);
        let minute = local.hour() * 60 + local.minute();
        let hhmm = |m: u32| match m {
            1440.. => "24:00".to_owned(),
            m => format!("{:02}:{:02}", m / 60, m % 60),
        };
        vec![pb::AvailabilityWindow {
            day_of_week: local.weekday().number_from_monday() as i32,
            start_local_time: hhmm(minute.saturating_sub(25)),
            end_local_time: hhmm((minute + 26).min(1440)),
        }]
    };
    // How many hours the other season's clock of `zone` is ahead of today's.
    let other_season = |zone: &str| {
        let tz: chrono_tz::Tz = zone.parse().expect("zone");
        let offset = |at: chrono::DateTime<chrono::Utc>| {
            i64::from(tz.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc())
        };
        (offset(now + Duration::days(182)) - offset(now)) / 3600
    };
    let new_york = mentor_in(&app, &skill, "America/New_York", around("America/New_York", 0)).await;
    let sydney = mentor_in(&app, &skill, "Australia/Sydney", around("Australia/Sydney", 0)).await;
    let shift = other_season("America/New_York");
    assert_ne!(shift, 0, "New York changes its clocks");
    // Open only on the other season's clock: a fixed offset would pick it.
    let wrong_season = mentor_in(&app, &skill, "America/New_York", around("America/New_York", shift)).await;
    let today = now.with_timezone(&chrono_tz::America::New_York).weekday();
    let closed = mentor_in(
        &app,
        &skill,
        "America/New_York",
        vec![pb::AvailabilityWindow {
            day_of_week: today.succ().succ().number_from_monday() as i32,
            start_local_time: "00:00".into(),
            end_local_time: "24:00".into(),
        }],
    )
    .await;
    // Always open by its windows, but in an accepted booking that has begun.
    let booked = mentor_in(&app, &skill, "UTC", vec![]).await;
    let listing = add_listing(&app, Some(booked)).await;
    let start = chrono::Utc::now() + Duration::milliseconds(1500);
    let b = app
        .coordinator()
        .create_booking(booking_request(
            listing,
            add_mentee(&app).await,
            start,
            start + Duration::hours(2),
        ))
        .await
        .expect("draft");
    accept(&app, &b.id).await.expect("accepted");
    let wait = (start - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(100)).await;

    let work = story(&app, &skill).await;
    let mut picked = Vec::new();
    for _ in 0..4 {
        picked.push(create(&app, work, None).await.expect("assigned").mentor_id);
    }
    let open = [new_york.to_string(), sydney.to_string()];
    let never = [wrong_season, closed, booked].map(|m| m.to_string());
    assert!(
        picked.iter().all(|m| open.contains(m) && !never.contains(m)),
        "only the open mentors: {picked:?}"
    );
    assert!(
        open.iter().all(|m| picked.contains(m)),
        "both open mentors take turns: {picked:?}"
    );
    // The caller's own choice is not checked.
    let chosen = create(&app, work, Some(closed)).await.expect("named");
    assert_eq!(chosen.mentor_id, closed.to_string());
    // Nobody available: NO_ELIGIBLE_MENTOR, as before.
    for id in [new_york, sydney] {
        let mut profile = app.coordinator().get_mentor(&id.to_string()).await.expect("mentor");
        profile.accepting_sessions = false;
        app.coordinator().upsert_mentor(profile).await.expect("stop accepting");
    }
    assert_status(
        create(&app, work, None).await,
        Code::FailedPrecondition,
        "NO_ELIGIBLE_MENTOR",
    );
}
