//! `spawn_app()`: a fresh database on the suite's private PostgreSQL, the real
//! server on a random loopback port, and real gRPC clients with tokens.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use mentorship::{
    app::{App, Rules},
    devdb::DevDb,
    grpc::{
        auth::{Claims, Verifier, mint_hs256},
        pb::{
            self, booking_service_client::BookingServiceClient, directory_service_client::DirectoryServiceClient,
            session_service_client::SessionServiceClient,
        },
    },
};
use sqlx::{Connection, PgPool, postgres::PgPoolOptions};
use tokio::sync::OnceCell;
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

pub const SECRET: &[u8] = b"test-secret-0123456789abcdef";
const TEMPLATE: &str = "mentorship_template";

/// The suite's PostgreSQL, started once per test process.
pub struct Cluster {
    pub db: DevDb,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// Starts the cluster and migrates the template database (once).
pub async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let db = tokio::task::spawn_blocking(DevDb::start_temporary)
                .await
                .expect("join")
                .expect("start private PostgreSQL");
            mentorship::devdb::ensure_database(&db.url("postgres"), TEMPLATE)
                .await
                .expect("create template");
            let mut conn = sqlx::PgConnection::connect(&db.url(TEMPLATE))
                .await
                .expect("connect template");
            mentorship::store::MIGRATOR
                .run(&mut conn)
                .await
                .expect("migrate template");
            conn.close().await.expect("close");
            Cluster { db }
        })
        .await
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster().await;
    let name = format!("t_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&cluster.db.url("postgres"))
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
    )))
    .execute(&mut conn)
    .await
    .expect("create test database");
    conn.close().await.ok();
    cluster.db.url(&name)
}

/// One server replica and its clients.
pub struct Replica {
    pub directory: DirectoryServiceClient<Channel>,
    pub bookings: BookingServiceClient<Channel>,
    pub sessions: SessionServiceClient<Channel>,
    pub channel: Channel,
    /// The running server (kept so tests can shut it down).
    pub _server: mentorship::RunningServer,
}

/// A test application: one database, one or more replicas on it.
pub struct TestApp {
    pub pool: PgPool,
    pub database_url: String,
    pub replicas: Vec<Replica>,
}

pub async fn spawn_app() -> TestApp {
    spawn_replicas(1).await
}

pub async fn spawn_replicas(n: usize) -> TestApp {
    spawn_with(n, Rules::default()).await
}

pub async fn spawn_with(n: usize, rules: Rules) -> TestApp {
    let database_url = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect(&database_url)
        .await
        .expect("connect test pool");
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(start_replica(&database_url, rules.clone()).await);
    }
    TestApp {
        pool,
        database_url,
        replicas,
    }
}

pub async fn start_replica(database_url: &str, rules: Rules) -> Replica {
    let pool = mentorship::connect(database_url, 10).await.expect("server pool");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = mentorship::start(
        App::new(pool, rules),
        Arc::new(Verifier::hs256(SECRET, None, None)),
        listener,
    )
    .await
    .expect("start server");
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect channel");
    Replica {
        directory: DirectoryServiceClient::new(channel.clone()),
        bookings: BookingServiceClient::new(channel.clone()),
        sessions: SessionServiceClient::new(channel.clone()),
        channel,
        _server: server,
    }
}

impl TestApp {
    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        self.replicas[0].directory.clone()
    }
    pub fn bookings(&self) -> BookingServiceClient<Channel> {
        self.replicas[0].bookings.clone()
    }
    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        self.replicas[0].sessions.clone()
    }

    /// Number of rows in `table` (for "nothing stored" assertions).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

/// Token claims for a caller.
pub fn claims(roles: &[&str], sub: Uuid, mentor_id: Option<Uuid>, ttl: Duration) -> Claims {
    Claims {
        sub: sub.to_string(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        mentor_id: mentor_id.map(|m| m.to_string()),
        exp: (Utc::now() + ttl).timestamp(),
        iss: None,
        aud: None,
    }
}

pub fn token(roles: &[&str], sub: Uuid, mentor_id: Option<Uuid>) -> String {
    mint_hs256(SECRET, &claims(roles, sub, mentor_id, Duration::hours(1))).expect("mint")
}

pub fn coordinator() -> String {
    token(&["coordinator"], Uuid::new_v4(), None)
}

pub fn service() -> String {
    token(&["service"], Uuid::new_v4(), None)
}

/// Wraps a message with a bearer token ("" sends none).
pub fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if !token.is_empty() {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    req
}

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    mentorship::grpc::convert::timestamp(t)
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
    app.directory()
        .upsert_mentee(authed(
            &coordinator(),
            pb::UpsertMenteeRequest {
                mentee: Some(pb::Mentee {
                    id: id.to_string(),
                    display_name: "Ada".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("upsert mentee");
    id
}

pub async fn add_mentor(app: &TestApp, timezone: &str, availability: Vec<pb::AvailabilityWindow>) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    let mentor = app
        .directory()
        .upsert_mentor(authed(
            &coordinator(),
            pb::UpsertMentorRequest {
                mentor: Some(pb::Mentor {
                    user_id: user.to_string(),
                    display_name: "Grace".into(),
                    skill_areas: vec!["rust".into()],
                    accepting_sessions: true,
                    timezone: timezone.into(),
                    availability,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("upsert mentor")
        .into_inner()
        .mentor
        .expect("mentor");
    (mentor.id.parse().expect("uuid"), user)
}

pub async fn add_listing(app: &TestApp, mentor: Option<Uuid>) -> Uuid {
    let listing = app
        .directory()
        .upsert_listing(authed(
            &coordinator(),
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: mentor.map(|m| m.to_string()).unwrap_or_default(),
                    title: "Code review".into(),
                    skill_area: "rust".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("upsert listing")
        .into_inner()
        .listing
        .expect("listing");
    listing.id.parse().expect("uuid")
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
    app.bookings()
        .create_booking(authed(&coordinator(), booking_request(w.listing, w.mentee, start, end)))
        .await
        .expect("create booking")
        .into_inner()
        .booking
        .expect("booking")
}

/// Accepts a booking as coordinator.
pub async fn accept(app: &TestApp, booking_id: &str) -> Result<pb::AcceptBookingResponse, Status> {
    app.bookings()
        .accept_booking(authed(
            &coordinator(),
            pb::AcceptBookingRequest {
                booking_id: booking_id.into(),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Creates and accepts a booking; returns the SCHEDULED session.
pub async fn scheduled(app: &TestApp, w: &World, start: DateTime<Utc>) -> pb::Session {
    let b = draft(app, w, start, start + Duration::hours(1)).await;
    accept(app, &b.id).await.expect("accept").session.expect("session")
}

/// Statuses of a session's events, in seq order, checking seq is 1..n.
pub async fn event_log(app: &TestApp, session_id: &str) -> Vec<pb::SessionEvent> {
    let events = app
        .sessions()
        .list_session_events(authed(
            &coordinator(),
            pb::ListSessionEventsRequest {
                session_id: session_id.into(),
                page_size: 100,
                page_token: String::new(),
            },
        ))
        .await
        .expect("list events")
        .into_inner()
        .events;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq must be gapless");
    }
    events
}

/// Fetches a session as coordinator.
pub async fn get_session(app: &TestApp, id: &str) -> pb::Session {
    app.sessions()
        .get_session(authed(&coordinator(), pb::GetSessionRequest { session_id: id.into() }))
        .await
        .expect("get session")
        .into_inner()
        .session
        .expect("session")
}

/// Polls (bounded) until the session reaches `status`; returns it.
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
        Some((c, paths)) => (
            Some(c),
            Some(prost_types::FieldMask {
                paths: paths.into_iter().map(String::from).collect(),
            }),
        ),
        None => (None, None),
    };
    app.sessions()
        .create_session(authed(
            &coordinator(),
            pb::CreateSessionRequest {
                mentee_id: w.mentee.to_string(),
                listing_id: w.listing.to_string(),
                config,
                config_mask,
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().session.expect("session"))
}

pub fn seconds(n: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: n, nanos: 0 }
}

/// Rules with limits and timeouts short enough for tests to watch them fire.
pub fn fast_rules() -> Rules {
    use mentorship::domain::{booking::DurationBounds, config::ConfigLimits, session::Timeouts};
    Rules {
        booking_bounds: DurationBounds {
            min: Duration::seconds(1),
            max: Duration::hours(8),
        },
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
