//! Replicas of the server in the test's process: `spawn_app()` and its
//! variants, each on a fresh database, with the suite's transport and the
//! `TEST_LOG` switch.

use std::sync::Arc;

use mentorship::{
    app::{App, Rules},
    grpc::{
        auth::Verifier,
        pb::{
            booking_service_client::BookingServiceClient, directory_service_client::DirectoryServiceClient,
            session_service_client::SessionServiceClient,
        },
    },
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tonic::transport::Channel;

use super::*;

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
pub async fn empty_app() -> TestApp {
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

pub async fn connect(addr: &str) -> Channel {
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
