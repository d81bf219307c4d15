//! The world a test makes: mentees, mentors, listings, bookings and
//! sessions; times; assertions on statuses; the rules tests run under.

use chrono::{DateTime, Duration, Utc};
use mentorship::{
    app::Rules,
    grpc::pb::{self},
};
use tonic::{Code, Status};
use uuid::Uuid;

use super::*;

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    mentorship::grpc::convert::timestamp(t)
}

/// A Timestamp field as a chrono time.
pub fn ts_of(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("timestamp");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("valid")
}

/// Next Monday (UTC) at `hour`:00, at least a week ahead.
pub fn monday_at(hour: u32) -> DateTime<Utc> {
    use chrono::{Datelike, TimeZone};
    let today = Utc::now().date_naive() + Duration::days(7);
    let days = (7 - today.weekday().num_days_from_monday()) % 7;
    let day = today + Duration::days(i64::from(days));
    Utc.from_utc_datetime(&day.and_hms_opt(hour, 0, 0).expect("valid time"))
}

/// Asserts the error code and the ErrorInfo reason.
pub fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, reason: &str) -> Status {
    use tonic_types::StatusExt;
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.domain, "mentorship.v1");
    assert_eq!(info.reason, reason, "unexpected reason: {status:?}");
    status
}

/// Field names of a BadRequest detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A mentee, a mentor (with its own user) and a listing of that mentor.
#[derive(Debug, Clone)]
pub struct World {
    pub mentee: Uuid,
    pub mentor: Uuid,
    pub mentor_user: Uuid,
    pub listing: Uuid,
}

impl World {
    pub fn mentee_token(&self) -> String {
        token(&["mentee"], self.mentee, None)
    }
    pub fn mentor_token(&self) -> String {
        token(&["mentor"], self.mentor_user, Some(self.mentor))
    }
}

pub async fn add_mentee(app: &TestApp) -> Uuid {
    let id = Uuid::new_v4();
    app.coordinator()
        .upsert_mentee(pb::Mentee {
            id: id.to_string(),
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .expect("upsert mentee");
    id
}

pub async fn add_mentor(app: &TestApp, timezone: &str, availability: Vec<pb::AvailabilityWindow>) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    let mentor = app
        .coordinator()
        .upsert_mentor(pb::Mentor {
            user_id: user.to_string(),
            display_name: "Grace".into(),
            skill_areas: vec!["rust".into()],
            accepting_sessions: true,
            timezone: timezone.into(),
            availability,
            ..Default::default()
        })
        .await
        .expect("upsert mentor");
    (mentor.id.parse().expect("uuid"), user)
}

/// A weekly availability window, local time "HH:MM".
pub fn window(day: pb::DayOfWeek, start: &str, end: &str) -> pb::AvailabilityWindow {
    pb::AvailabilityWindow {
        day_of_week: day as i32,
        start_local_time: start.into(),
        end_local_time: end.into(),
    }
}

pub async fn add_listing(app: &TestApp, mentor: Option<Uuid>) -> Uuid {
    let listing = app
        .coordinator()
        .upsert_listing(pb::Listing {
            mentor_id: mentor.map(|m| m.to_string()).unwrap_or_default(),
            title: "Code review".into(),
            skill_area: "rust".into(),
            ..Default::default()
        })
        .await
        .expect("upsert listing");
    listing.id.parse().expect("uuid")
}

/// A mentor (UTC, accepting, holding at most `limit` sessions; 0: the
/// configured default) and a listing of theirs, made through `c`: the
/// mentor's id and the listing's.
pub async fn mentor_with_listing(c: &Caller, limit: i32) -> (Uuid, Uuid) {
    mentor_of_user_with_listing(c, Uuid::new_v4(), limit).await
}

/// [`mentor_with_listing`] for the user `user`.
async fn mentor_of_user_with_listing(c: &Caller, user: Uuid, limit: i32) -> (Uuid, Uuid) {
    let mentor = c
        .upsert_mentor(pb::Mentor {
            user_id: user.to_string(),
            display_name: "Grace".into(),
            skill_areas: vec!["rust".into()],
            accepting_sessions: true,
            timezone: "UTC".into(),
            max_concurrent_sessions: limit,
            ..Default::default()
        })
        .await
        .expect("mentor");
    let listing = c
        .upsert_listing(pb::Listing {
            mentor_id: mentor.id.clone(),
            title: "Pairing".into(),
            skill_area: "rust".into(),
            ..Default::default()
        })
        .await
        .expect("listing");
    (mentor.id.parse().expect("uuid"), listing.id.parse().expect("uuid"))
}

/// A mentee, a mentor and a listing, made through `c` (a binary's caller).
pub async fn world_on(c: &Caller) -> World {
    let mentee = Uuid::new_v4();
    c.upsert_mentee(pb::Mentee {
        id: mentee.to_string(),
        display_name: "Ada".into(),
        ..Default::default()
    })
    .await
    .expect("mentee");
    let mentor_user = Uuid::new_v4();
    let (mentor, listing) = mentor_of_user_with_listing(c, mentor_user, 0).await;
    World {
        mentee,
        mentor,
        mentor_user,
        listing,
    }
}

/// A mentee and a mentor always available, with a listing.
pub async fn world(app: &TestApp) -> World {
    let mentee = add_mentee(app).await;
    let (mentor, mentor_user) = add_mentor(app, "UTC", vec![]).await;
    let listing = add_listing(app, Some(mentor)).await;
    World {
        mentee,
        mentor,
        mentor_user,
        listing,
    }
}

pub fn booking_request(
    listing: Uuid,
    mentee: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> pb::CreateBookingRequest {
    pb::CreateBookingRequest {
        listing_id: listing.to_string(),
        mentee_id: mentee.to_string(),
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        notes: "please review my parser".into(),
        request_id: String::new(),
    }
}

/// Creates a DRAFT booking as coordinator.
pub async fn draft(app: &TestApp, w: &World, start: DateTime<Utc>, end: DateTime<Utc>) -> pb::Booking {
    app.coordinator()
        .create_booking(booking_request(w.listing, w.mentee, start, end))
        .await
        .expect("create booking")
}

/// Accepts a booking as coordinator.
pub async fn accept(app: &TestApp, booking_id: &str) -> Result<pb::AcceptBookingResponse, Status> {
    app.coordinator().accept_booking(booking_id).await
}

/// Creates and accepts a booking; returns the SCHEDULED session.
pub async fn scheduled(app: &TestApp, w: &World, start: DateTime<Utc>) -> pb::Session {
    let b = draft(app, w, start, start + Duration::hours(1)).await;
    accept(app, &b.id).await.expect("accept").session.expect("session")
}

/// A session's events in seq order, checking that seq is 1..n.
pub async fn event_log(app: &TestApp, session_id: &str) -> Vec<pb::SessionEvent> {
    let events = app
        .coordinator()
        .list_session_events(session_id, 100, "")
        .await
        .expect("list events")
        .events;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq must be gapless");
    }
    events
}

/// Fetches a session as coordinator.
pub async fn get_session(app: &TestApp, id: &str) -> pb::Session {
    app.coordinator().get_session(id).await.expect("get session")
}

/// Polls (bounded) until the session reaches `status`; returns it. Only for
/// the tests about real time.
pub async fn wait_for_status(
    app: &TestApp,
    id: &str,
    status: pb::SessionStatus,
    within: std::time::Duration,
) -> pb::Session {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = get_session(app, id).await;
        if s.status() == status || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A CreateSession request as coordinator, with optional config overrides.
pub async fn on_demand(
    app: &TestApp,
    w: &World,
    config: Option<(pb::SessionConfig, Vec<&str>)>,
) -> Result<pb::Session, Status> {
    let (config, config_mask) = match config {
        Some((c, paths)) => (Some(c), Some(mask(&paths))),
        None => (None, None),
    };
    app.coordinator()
        .create_session(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            config,
            config_mask,
            ..Default::default()
        })
        .await
}

pub fn seconds(n: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: n, nanos: 0 }
}

/// Rules whose capacity limits never bind: for tests about the state
/// machine, access or races between commands, which start many sessions of
/// one mentee and one mentor.
pub fn roomy_rules() -> Rules {
    use mentorship::domain::capacity::Limits;
    Rules {
        default_mentor_limit: 10_000,
        limits: Limits {
            per_mentee: 10_000,
            system: 10_000,
            queue: 100,
        },
        ..Rules::default()
    }
}

/// Rules with limits and timeouts short enough for tests to watch them fire.
pub fn fast_rules() -> Rules {
    use mentorship::domain::{booking::DurationBounds, clocks::Timeouts, config::ConfigLimits};
    Rules {
        booking_bounds: DurationBounds {
            min: Duration::seconds(1),
            max: Duration::hours(8),
        },
        // Bookings that start in a moment.
        min_notice: Duration::zero(),
        timeouts: Timeouts {
            no_show_grace: Duration::seconds(1),
            pause_timeout: Duration::seconds(2),
            queue_timeout: Duration::seconds(2),
        },
        config_limits: ConfigLimits {
            max_duration_min_secs: 1,
            max_duration_max_secs: 72 * 3600,
            check_in_min_secs: 1,
        },
        ..Rules::default()
    }
}

/// CreateSession for every (mentee, listing) at once, alternating between
/// the first two replicas; the results in the order given.
pub async fn create_sessions_at_once(app: &TestApp, pairs: &[(Uuid, Uuid)]) -> Vec<Result<pb::Session, Status>> {
    let tok = coordinator();
    let handles: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (mentee, listing))| {
            let c = app.on(i % app.replicas.len(), &tok);
            let req = pb::CreateSessionRequest {
                mentee_id: mentee.to_string(),
                listing_id: listing.to_string(),
                ..Default::default()
            };
            tokio::spawn(async move { c.create_session(req).await })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.expect("join"));
    }
    results
}

/// Concurrency slots (ACTIVE or PAUSED sessions) a participant holds;
/// `column` is `mentor_id` or `mentee_id`.
pub async fn slots_held(app: &TestApp, column: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM sessions WHERE {column} = $1 AND status IN ('ACTIVE', 'PAUSED')"
    )))
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("count slots")
}

/// A shell block of the README, as written: the ```sh block after the
/// `<!-- {marker}: … -->` comment.
pub fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let (_, after) = readme
        .split_once(&format!("<!-- {marker}: "))
        .unwrap_or_else(|| panic!("the README marks its {marker} block"));
    after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block.to_owned())
        .expect("a sh block after the marker")
}

/// Runs the README block `marker` with bash (`-euo pipefail`, so any
/// failing command fails it) in a fresh directory, with `env`; its output,
/// which must be a success, and the directory it ran in.
pub async fn run_readme_block(marker: &str, env: &[(&str, &str)]) -> (String, std::path::PathBuf) {
    let block = readme_block(marker);
    let dir = std::env::temp_dir().join(format!("readme-{marker}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a working directory");
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(&dir)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "the README's {marker} block failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout, dir)
}
