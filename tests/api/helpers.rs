//! `spawn_app()`: a fresh database on the suite's private PostgreSQL, the real
//! server on a random loopback port, and real gRPC clients with tokens; one
//! helper per RPC ([`Caller`]); the real binary for tests that signal or
//! measure a process ([`spawn_binary`]); and the suite's scale.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
};

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
use tonic::{Code, Request, Status, Streaming, transport::Channel};
use uuid::Uuid;

pub const SECRET: &[u8] = b"test-secret-0123456789abcdef-0123456789";
const TEMPLATE: &str = "mentorship_template";

/// How heavy the heavy tests are: rounds of races, property-test cases, fault
/// schedules. `MENTORSHIP_TEST_SCALE=full` runs the full counts the issues
/// ask for; anything else (the default) runs the small counts that keep
/// `cargo test` within a few minutes on two cores.
pub fn scale(small: usize, full: usize) -> usize {
    match std::env::var("MENTORSHIP_TEST_SCALE").as_deref() {
        Ok("full") => full,
        _ => small,
    }
}

/// The suite's PostgreSQL, started once per test process.
pub struct Cluster {
    pub db: DevDb,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// Starts the cluster and migrates the template database (once).
pub async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let db = own_cluster().await;
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

/// A private throwaway cluster, for a test that stops or restarts
/// PostgreSQL (so it never disturbs the other tests' shared cluster).
pub async fn own_cluster() -> DevDb {
    tokio::task::spawn_blocking(DevDb::start_temporary)
        .await
        .expect("join")
        .expect("start private PostgreSQL")
}

/// [`own_cluster`] whose acknowledged commits survive a crash of the server
/// (`synchronous_commit` on), for the tests that crash it.
pub async fn own_crash_safe_cluster() -> DevDb {
    tokio::task::spawn_blocking(|| DevDb::start_temporary_with(mentorship::devdb::Durability::CrashSafe))
        .await
        .expect("join")
        .expect("start private PostgreSQL")
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
    /// The replica's use cases, for stepping its background jobs.
    pub app: App,
    /// The running server (kept so tests can shut it down).
    pub server: mentorship::RunningServer,
}

/// A test application: one database, one or more replicas on it.
pub struct TestApp {
    pub pool: PgPool,
    pub database_url: String,
    pub replicas: Vec<Replica>,
}

/// Whether a test's replicas run their background jobs in real time, or the
/// test steps them (`TestApp::sweep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    Stepped,
    RealTime,
}

pub async fn spawn_app() -> TestApp {
    spawn_replicas(1).await
}

pub async fn spawn_replicas(n: usize) -> TestApp {
    spawn_with(n, Rules::default()).await
}

pub async fn spawn_with(n: usize, rules: Rules) -> TestApp {
    spawn_jobs(n, rules, Jobs::Stepped).await
}

pub async fn spawn_jobs(n: usize, rules: Rules, jobs: Jobs) -> TestApp {
    let mut app = empty_app().await;
    for _ in 0..n {
        app.replicas
            .push(start_replica(&app.database_url, rules.clone(), jobs).await);
    }
    app
}

/// One replica with the given background work and transport (a metrics
/// address, TLS, limits).
pub async fn spawn_serving(
    rules: Rules,
    background: mentorship::Background,
    transport: mentorship::Transport,
) -> TestApp {
    spawn_many_serving(1, rules, background, transport).await
}

/// [`spawn_serving`] with `n` replicas on one database.
pub async fn spawn_many_serving(
    n: usize,
    rules: Rules,
    background: mentorship::Background,
    transport: mentorship::Transport,
) -> TestApp {
    let mut app = empty_app().await;
    for _ in 0..n {
        let replica = start_replica_with(&app.database_url, rules.clone(), background, transport.clone()).await;
        app.replicas.push(replica);
    }
    app
}

/// One replica whose statements wait up to `lock` for a lock: for tests that
/// hold a table lock on purpose for longer than the service's 1 s.
pub async fn spawn_waiting_for_locks(rules: Rules, lock: std::time::Duration) -> TestApp {
    let mut app = empty_app().await;
    let timeouts = mentorship::DbTimeouts {
        lock,
        ..Default::default()
    };
    let pool = mentorship::connect_with(&app.database_url, 10, timeouts)
        .await
        .expect("server pool");
    let background = mentorship::Background {
        sweeper: false,
        announce: true,
    };
    let replica = start_replica_on(pool, rules, background, transport()).await;
    app.replicas.push(replica);
    app
}

/// The transport of the suite's replicas: the defaults, but for rate limits
/// far above what any test sends from one token (many tests drive bursts
/// from one caller; the rate-limit tests set their own).
pub fn transport() -> mentorship::Transport {
    use mentorship::grpc::rate_limit::{Budget, RateLimits};
    let lifted = Budget {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    mentorship::Transport {
        rate_limits: RateLimits {
            reads: lifted,
            writes: lifted,
            streams: lifted,
        },
        ..Default::default()
    }
}

/// A fresh database with no replica yet.
async fn empty_app() -> TestApp {
    let database_url = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect(&database_url)
        .await
        .expect("connect test pool");
    TestApp {
        pool,
        database_url,
        replicas: Vec::new(),
    }
}

pub async fn start_replica(database_url: &str, rules: Rules, jobs: Jobs) -> Replica {
    let background = mentorship::Background {
        sweeper: jobs == Jobs::RealTime,
        announce: true,
    };
    start_replica_with(database_url, rules, background, transport()).await
}

/// A replica with the given background work (a test that switches some off)
/// and HTTP/2 limits.
pub async fn start_replica_with(
    database_url: &str,
    rules: Rules,
    background: mentorship::Background,
    transport: mentorship::Transport,
) -> Replica {
    let pool = mentorship::connect(database_url, 10).await.expect("server pool");
    start_replica_on(pool, rules, background, transport).await
}

/// [`start_replica_with`] on a pool of the test's making.
pub async fn start_replica_on(
    pool: sqlx::PgPool,
    rules: Rules,
    background: mentorship::Background,
    transport: mentorship::Transport,
) -> Replica {
    test_log();
    let listener = mentorship::grpc::connections::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let app = App::new(pool, rules);
    let server = mentorship::start(
        app.clone(),
        Arc::new(Verifier::hs256(SECRET, None, None).expect("a long enough secret")),
        listener,
        background,
        transport,
    )
    .await
    .expect("start server");
    let channel = connect(&server.addr.to_string()).await;
    Replica {
        directory: DirectoryServiceClient::new(channel.clone()),
        bookings: BookingServiceClient::new(channel.clone()),
        sessions: SessionServiceClient::new(channel.clone()),
        channel,
        app,
        server,
    }
}

/// A channel to `addr` whose connections come from the local address `ip`
/// (any of 127.0.0.0/8 on loopback): a client on another host, as the
/// server sees it.
pub async fn channel_from(ip: std::net::IpAddr, addr: std::net::SocketAddr) -> Channel {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_with_connector(connector)
        .await
        .expect("connect channel")
}

async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect channel")
}

impl TestApp {
    /// A caller with `token`, on the first replica.
    pub fn as_(&self, token: &str) -> Caller {
        self.on(0, token)
    }

    /// A caller with `token`, on replica `i`.
    pub fn on(&self, i: usize, token: &str) -> Caller {
        Caller::new(&self.replicas[i].channel, token)
    }

    /// The generated clients of the first replica, for requests the helpers
    /// do not shape (malformed input, for one).
    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        self.replicas[0].directory.clone()
    }
    pub fn bookings(&self) -> BookingServiceClient<Channel> {
        self.replicas[0].bookings.clone()
    }
    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        self.replicas[0].sessions.clone()
    }

    /// A fresh coordinator, on the first replica.
    pub fn coordinator(&self) -> Caller {
        self.as_(&coordinator())
    }

    /// Runs one pass of the first replica's deadline sweeper; returns how many timeouts fired.
    pub async fn sweep(&self) -> usize {
        mentorship::jobs::sweeper::sweep_once(&self.replicas[0].app)
            .await
            .expect("sweep")
    }

    /// Makes a session's armed deadline due now, as if its time had passed.
    pub async fn expire_deadline(&self, session_id: &str) {
        let armed = sqlx::query("UPDATE sessions SET deadline = now() - interval '1 millisecond' WHERE id = $1::uuid AND deadline IS NOT NULL")
            .bind(session_id)
            .execute(&self.pool)
            .await
            .expect("expire deadline")
            .rows_affected();
        assert_eq!(armed, 1, "session {session_id} has an armed deadline");
    }

    /// Makes a session's next check-in due now, as if its interval of
    /// active time had passed: its anchor moves back so that the session's
    /// own clocks say so, and the stored due time follows.
    pub async fn expire_check_in(&self, session_id: &str) {
        let armed = sqlx::query(
            "UPDATE sessions SET
                 check_in_due = now() - interval '1 millisecond',
                 check_in_anchor_us = active_banked_us
                     + (extract(epoch FROM (now() - interval '1 millisecond' - active_since)) * 1000000)::bigint
                     - (config->>'check_in_interval_secs')::bigint * 1000000 * (check_ins_missed + 1)
             WHERE id = $1::uuid AND check_in_due IS NOT NULL AND active_since IS NOT NULL",
        )
        .bind(session_id)
        .execute(&self.pool)
        .await
        .expect("expire check-in")
        .rows_affected();
        assert_eq!(armed, 1, "session {session_id} has a check-in due");
    }

    /// Rows in every table a request can write to, in a fixed order (for
    /// "nothing stored" assertions).
    pub async fn stored_counts(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "mentees",
            "mentors",
            "mentor_availability",
            "listings",
            "bookings",
            "sessions",
            "session_events",
            "idempotency_keys",
            "webhooks",
            "webhook_deliveries",
        ] {
            counts.push(self.count(table).await);
        }
        counts
    }

    /// Number of rows in `table` (for "nothing stored" assertions).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

/// One helper per RPC, for one caller on one replica. Requests that carry an
/// etag or request id take them from [`Caller::with_etag`] and
/// [`Caller::with_request_id`]; responses come back unwrapped.
#[derive(Clone)]
pub struct Caller {
    channel: Channel,
    token: String,
    etag: String,
    request_id: String,
    timeout: Option<std::time::Duration>,
    directory: DirectoryServiceClient<Channel>,
    bookings: BookingServiceClient<Channel>,
    sessions: SessionServiceClient<Channel>,
}

impl Caller {
    pub fn new(channel: &Channel, token: &str) -> Caller {
        Caller {
            channel: channel.clone(),
            token: token.to_owned(),
            etag: String::new(),
            request_id: String::new(),
            timeout: None,
            directory: DirectoryServiceClient::new(channel.clone()),
            bookings: BookingServiceClient::new(channel.clone()),
            sessions: SessionServiceClient::new(channel.clone()),
        }
    }

    /// Sends this etag with session commands.
    pub fn with_etag(mut self, etag: &str) -> Caller {
        self.etag = etag.to_owned();
        self
    }

    /// Sends this request id with mutations.
    pub fn with_request_id(mut self, request_id: &str) -> Caller {
        self.request_id = request_id.to_owned();
        self
    }

    /// Sends a deadline (`grpc-timeout`) with every call.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Caller {
        self.timeout = Some(timeout);
        self
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = authed(&self.token, msg);
        if let Some(timeout) = self.timeout {
            req.set_timeout(timeout);
        }
        req
    }

    /// Any unary RPC, by its request alone (`pb::Rpc` is generated for
    /// every method): a new RPC can be tested before it has a helper below.
    pub async fn call<R: pb::Rpc>(&self, request: R) -> Result<R::Response, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(R::PATH);
        let codec = tonic_prost::ProstCodec::<R, R::Response>::default();
        Ok(grpc.unary(self.req(request), path, codec).await?.into_inner())
    }

    // DirectoryService.

    pub async fn upsert_mentee(&self, mentee: pb::Mentee) -> Result<pb::Mentee, Status> {
        let req = pb::UpsertMenteeRequest {
            mentee: Some(mentee),
            request_id: self.request_id.clone(),
        };
        let r = self.directory.clone().upsert_mentee(self.req(req)).await?;
        Ok(r.into_inner().mentee.expect("mentee"))
    }

    pub async fn get_mentee(&self, id: &str) -> Result<pb::Mentee, Status> {
        let req = pb::GetMenteeRequest { mentee_id: id.into() };
        let r = self.directory.clone().get_mentee(self.req(req)).await?;
        Ok(r.into_inner().mentee.expect("mentee"))
    }

    pub async fn upsert_mentor(&self, mentor: pb::Mentor) -> Result<pb::Mentor, Status> {
        let req = pb::UpsertMentorRequest {
            mentor: Some(mentor),
            request_id: self.request_id.clone(),
        };
        let r = self.directory.clone().upsert_mentor(self.req(req)).await?;
        Ok(r.into_inner().mentor.expect("mentor"))
    }

    pub async fn get_mentor(&self, id: &str) -> Result<pb::Mentor, Status> {
        let req = pb::GetMentorRequest { mentor_id: id.into() };
        let r = self.directory.clone().get_mentor(self.req(req)).await?;
        Ok(r.into_inner().mentor.expect("mentor"))
    }

    pub async fn list_mentors(&self, req: pb::ListMentorsRequest) -> Result<pb::ListMentorsResponse, Status> {
        Ok(self.directory.clone().list_mentors(self.req(req)).await?.into_inner())
    }

    pub async fn upsert_listing(&self, listing: pb::Listing) -> Result<pb::Listing, Status> {
        let req = pb::UpsertListingRequest {
            listing: Some(listing),
            request_id: self.request_id.clone(),
        };
        let r = self.directory.clone().upsert_listing(self.req(req)).await?;
        Ok(r.into_inner().listing.expect("listing"))
    }

    pub async fn get_listing(&self, id: &str) -> Result<pb::Listing, Status> {
        let req = pb::GetListingRequest { listing_id: id.into() };
        let r = self.directory.clone().get_listing(self.req(req)).await?;
        Ok(r.into_inner().listing.expect("listing"))
    }

    pub async fn list_listings(&self, req: pb::ListListingsRequest) -> Result<pb::ListListingsResponse, Status> {
        Ok(self.directory.clone().list_listings(self.req(req)).await?.into_inner())
    }

    // BookingService.

    pub async fn create_booking(&self, req: pb::CreateBookingRequest) -> Result<pb::Booking, Status> {
        let req = pb::CreateBookingRequest {
            request_id: self.request_id.clone(),
            ..req
        };
        let r = self.bookings.clone().create_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    pub async fn get_booking(&self, id: &str) -> Result<pb::Booking, Status> {
        let req = pb::GetBookingRequest { booking_id: id.into() };
        let r = self.bookings.clone().get_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    pub async fn list_bookings(&self, req: pb::ListBookingsRequest) -> Result<pb::ListBookingsResponse, Status> {
        Ok(self.bookings.clone().list_bookings(self.req(req)).await?.into_inner())
    }

    pub async fn accept_booking(&self, id: &str) -> Result<pb::AcceptBookingResponse, Status> {
        let req = pb::AcceptBookingRequest {
            booking_id: id.into(),
            request_id: self.request_id.clone(),
        };
        Ok(self.bookings.clone().accept_booking(self.req(req)).await?.into_inner())
    }

    pub async fn decline_booking(&self, id: &str, reason: &str) -> Result<pb::Booking, Status> {
        let req = pb::DeclineBookingRequest {
            booking_id: id.into(),
            reason: reason.into(),
            request_id: self.request_id.clone(),
        };
        let r = self.bookings.clone().decline_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    pub async fn cancel_booking(&self, id: &str, reason: &str) -> Result<pb::Booking, Status> {
        let req = pb::CancelBookingRequest {
            booking_id: id.into(),
            reason: reason.into(),
            request_id: self.request_id.clone(),
        };
        let r = self.bookings.clone().cancel_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    // SessionService.

    pub async fn create_session(&self, req: pb::CreateSessionRequest) -> Result<pb::Session, Status> {
        let req = pb::CreateSessionRequest {
            request_id: self.request_id.clone(),
            ..req
        };
        let r = self.sessions.clone().create_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn get_session(&self, id: &str) -> Result<pb::Session, Status> {
        let req = pb::GetSessionRequest { session_id: id.into() };
        let r = self.sessions.clone().get_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn list_sessions(&self, req: pb::ListSessionsRequest) -> Result<pb::ListSessionsResponse, Status> {
        Ok(self.sessions.clone().list_sessions(self.req(req)).await?.into_inner())
    }

    pub async fn start_session(&self, id: &str) -> Result<pb::Session, Status> {
        let req = pb::StartSessionRequest {
            session_id: id.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().start_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn pause_session(&self, id: &str, reason: &str) -> Result<pb::Session, Status> {
        let req = pb::PauseSessionRequest {
            session_id: id.into(),
            reason: reason.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().pause_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn resume_session(&self, id: &str) -> Result<pb::Session, Status> {
        let req = pb::ResumeSessionRequest {
            session_id: id.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().resume_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn complete_session(&self, id: &str, report: Option<pb::SessionReport>) -> Result<pb::Session, Status> {
        let req = pb::CompleteSessionRequest {
            session_id: id.into(),
            report,
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().complete_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn fail_session(
        &self,
        id: &str,
        error_message: &str,
        details: Option<prost_types::Struct>,
    ) -> Result<pb::Session, Status> {
        let req = pb::FailSessionRequest {
            session_id: id.into(),
            error_message: error_message.into(),
            details,
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().fail_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn cancel_session(&self, id: &str, reason: &str) -> Result<pb::Session, Status> {
        let req = pb::CancelSessionRequest {
            session_id: id.into(),
            reason: reason.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().cancel_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn advance_stage(&self, id: &str, stage: &str) -> Result<pb::Session, Status> {
        let req = pb::AdvanceStageRequest {
            session_id: id.into(),
            stage: stage.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().advance_stage(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn record_check_in(&self, id: &str, note: &str, blocker: bool) -> Result<pb::Session, Status> {
        let req = pb::RecordCheckInRequest {
            session_id: id.into(),
            note: note.into(),
            blocker,
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        Ok(self.call(req).await?.session.expect("session"))
    }

    pub async fn list_session_events(
        &self,
        id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListSessionEventsResponse, Status> {
        let req = pb::ListSessionEventsRequest {
            session_id: id.into(),
            page_size,
            page_token: page_token.into(),
        };
        Ok(self
            .sessions
            .clone()
            .list_session_events(self.req(req))
            .await?
            .into_inner())
    }

    pub async fn get_session_config(&self, id: &str) -> Result<pb::SessionConfig, Status> {
        let req = pb::GetSessionConfigRequest { session_id: id.into() };
        let r = self.sessions.clone().get_session_config(self.req(req)).await?;
        Ok(r.into_inner().config.expect("config"))
    }

    pub async fn update_session_config(
        &self,
        id: &str,
        config: pb::SessionConfig,
        paths: &[&str],
    ) -> Result<pb::Session, Status> {
        let req = pb::UpdateSessionConfigRequest {
            session_id: id.into(),
            config: Some(config),
            update_mask: Some(mask(paths)),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().update_session_config(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn list_config_templates(&self) -> Result<Vec<pb::ConfigTemplate>, Status> {
        let req = pb::ListConfigTemplatesRequest {};
        let r = self.sessions.clone().list_config_templates(self.req(req)).await?;
        Ok(r.into_inner().templates)
    }

    pub async fn watch_session(
        &self,
        id: &str,
        after_seq: Option<i64>,
    ) -> Result<Streaming<pb::WatchSessionResponse>, Status> {
        let req = pb::WatchSessionRequest {
            session_id: id.into(),
            after_seq,
        };
        Ok(self.sessions.clone().watch_session(self.req(req)).await?.into_inner())
    }

    pub async fn watch_sessions(
        &self,
        req: pb::WatchSessionsRequest,
    ) -> Result<Streaming<pb::WatchSessionsResponse>, Status> {
        Ok(self.sessions.clone().watch_sessions(self.req(req)).await?.into_inner())
    }
}

/// A FieldMask of `paths`.
pub fn mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}

/// The real `mentorship` binary, serving on a loopback port it chose; killed on drop.
pub struct BinaryServer {
    pub child: Child,
    pub addr: String,
    pub channel: Channel,
    /// Its log (stderr).
    pub log: std::path::PathBuf,
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl BinaryServer {
    /// A caller with `token`.
    pub fn as_(&self, token: &str) -> Caller {
        Caller::new(&self.channel, token)
    }

    /// The process's resident memory now, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the built binary on `database_url` with the test secret and `env`,
/// listening on port 0 (so no other process can take its port first);
/// learns the address from its log and waits until it answers health checks.
pub async fn spawn_binary(database_url: &str, env: &[(&str, &str)]) -> BinaryServer {
    spawn_binary_with(database_url, env, None).await
}

/// [`spawn_binary`] for a server that speaks TLS: the client checks it
/// with `tls` (the test CA, a client certificate for mutual TLS).
pub async fn spawn_binary_with(
    database_url: &str,
    env: &[(&str, &str)],
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> BinaryServer {
    let mut command = binary();
    command
        .env("DATABASE_URL", database_url)
        .env("MENTORSHIP_JWT_SECRET", std::str::from_utf8(SECRET).expect("utf8"))
        .envs(env.iter().copied());
    spawn_command(command, tls).await
}

/// The built binary as `cargo run` runs it: no `DATABASE_URL` and no key,
/// so it starts its private cluster and development key in `data_dir`.
pub async fn spawn_binary_in_development(data_dir: &std::path::Path) -> BinaryServer {
    let mut command = binary();
    command
        .env_remove("DATABASE_URL")
        .env_remove("MENTORSHIP_JWT_SECRET")
        .env("MENTORSHIP_DATA_DIR", data_dir);
    spawn_command(command, None).await
}

/// The log filter `TEST_LOG` asks for, if any: a `RUST_LOG`-style filter
/// (`debug,sqlx=warn`), or `1` for `info,sqlx=warn`.
fn test_log_filter() -> Option<String> {
    let asked = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty())?;
    Some(if asked == "1" {
        "info,sqlx=warn".to_owned()
    } else {
        asked
    })
}

/// `TEST_LOG=1 cargo test NAME` shows the logs of the replicas a test runs
/// in its process (the harness prints a test's output when it fails, or
/// always with `--nocapture`); without it they log nothing.
pub fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(filter) = test_log_filter() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The built binary, listening on port 0 (so no other process can take its
/// port first) and logging at info (or as `TEST_LOG` says), unless the
/// caller's env says otherwise.
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mentorship"));
    command
        .env("MENTORSHIP_LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", test_log_filter().unwrap_or_else(|| "info,sqlx=warn".into()));
    command
}

async fn spawn_command(mut command: Command, tls: Option<tonic::transport::ClientTlsConfig>) -> BinaryServer {
    let log = std::env::temp_dir().join(format!("mentorship-{}.log", Uuid::new_v4().simple()));
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .spawn()
        .expect("start the binary");
    let mut server = BinaryServer {
        child,
        addr: String::new(),
        channel: Channel::from_static("http://127.0.0.1:1").connect_lazy(),
        log,
    };
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    for _ in 0..300 {
        if let Some(status) = server.child.try_wait().expect("wait") {
            panic!("the binary exited before serving ({status}):\n{}", server.log_text());
        }
        let serving = server.log_text().lines().find_map(serving_addr);
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(addr) = serving {
            let endpoint = Channel::from_shared(format!("{scheme}://{addr}")).expect("uri");
            let endpoint = match &tls {
                Some(tls) => endpoint.tls_config(tls.clone()).expect("client TLS"),
                None => endpoint,
            };
            if let Ok(channel) = endpoint.connect().await
                && HealthClient::new(channel.clone())
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok()
            {
                server.addr = addr;
                server.channel = channel;
                return server;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the binary did not serve within 15 s:\n{}", server.log_text());
}

/// The address in the "serving mentorship.v1" line, in text or JSON.
fn serving_addr(line: &str) -> Option<String> {
    let rest = line.split_once("serving mentorship.v1")?.1;
    if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        return Some(json["fields"]["addr"].as_str()?.to_owned());
    }
    Some(rest.split_once("addr=")?.1.split_whitespace().next()?.to_owned())
}

/// Token claims for a caller.
pub fn claims(roles: &[&str], sub: Uuid, mentor_id: Option<Uuid>, ttl: Duration) -> Claims {
    Claims {
        sub: sub.to_string(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        mentor_id: mentor_id.map(|m| m.to_string()),
        exp: (Utc::now() + ttl).timestamp(),
        iat: Some(Utc::now().timestamp()),
        ..Claims::default()
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
    let mentor = c
        .upsert_mentor(pb::Mentor {
            user_id: mentor_user.to_string(),
            display_name: "Grace".into(),
            timezone: "UTC".into(),
            accepting_sessions: true,
            ..Default::default()
        })
        .await
        .expect("mentor");
    let listing = c
        .upsert_listing(pb::Listing {
            mentor_id: mentor.id.clone(),
            title: "Review".into(),
            skill_area: "rust".into(),
            ..Default::default()
        })
        .await
        .expect("listing");
    World {
        mentee,
        mentor: mentor.id.parse().expect("uuid"),
        mentor_user,
        listing: listing.id.parse().expect("uuid"),
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
