//! `mentorship`: a gRPC service that owns the lifecycle of mentorship bookings
//! and sessions.
//!
//! Layers, outermost first: [`grpc`] (tonic handlers, auth, status mapping) →
//! [`app`] (use cases) → [`domain`] (pure rules) and [`store`] (all SQL).
//! [`devdb`] runs the private PostgreSQL of `cargo run` and the tests;
//! [`cli`] holds the binary's commands.

pub mod app;
pub mod cli;
pub mod config;
pub mod devdb;
pub mod domain;
pub mod grpc;
pub mod jobs;
pub mod store;
pub mod watch;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    app::App,
    grpc::auth::{AuthLayer, Verifier},
};

/// The longest one statement of the service may run. Every statement of the
/// service is small (a row, a page, a batch); one that runs longer is stuck.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest the service's own connections may sit idle inside a
/// transaction. A unit of work never waits on anything but the database; a
/// transaction left open would hold back every WatchSessions feed in the
/// cluster (docs/ARCHITECTURE.md, "Watching").
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies pending migrations (on a connection of their own, free of the
/// service's statement timeout: building an index may take a while), then
/// opens the service's pool, whose connections carry [`STATEMENT_TIMEOUT`]
/// and [`IDLE_IN_TRANSACTION_TIMEOUT`].
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let millis = |d: Duration| d.as_millis().to_string();
    let options = migrate(database_url).await?.options([
        ("statement_timeout", millis(STATEMENT_TIMEOUT)),
        (
            "idle_in_transaction_session_timeout",
            millis(IDLE_IN_TRANSACTION_TIMEOUT),
        ),
    ]);
    pool(options, max_connections).await
}

/// [`connect`] without the timeouts, for one-off commands that may run long
/// statements on purpose (`mentorship purge --dry-run` counting all
/// history, bulk seeding for benchmarks).
pub async fn connect_for_tools(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    pool(migrate(database_url).await?, max_connections).await
}

async fn migrate(database_url: &str) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = database_url.parse().context("parsing the database URL")?;
    let mut migrating = PgConnection::connect_with(&options)
        .await
        .context("connecting to PostgreSQL")?;
    store::MIGRATOR
        .run(&mut migrating)
        .await
        .context("applying migrations")?;
    migrating.close().await.context("closing the migration connection")?;
    Ok(options)
}

async fn pool(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// A server running in the background of the current runtime.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight calls finish, and waits for the server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// Waits until the server ends (after [`RunningServer::trigger`] or an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }

    /// A token that stops the server when cancelled.
    pub fn trigger(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The background work a server runs besides the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Background {
    /// The deadline sweeper (system timeouts), the purge of old request
    /// ids and the retention purge. Always on in production; tests that are not about time turn it
    /// off and step `jobs::sweeper::sweep_once` themselves.
    pub sweeper: bool,
    /// The notifier that tells the other replicas of this one's commits.
    /// Always on in production; a test turns it off to act as a replica that
    /// died between its commit and its NOTIFY.
    pub announce: bool,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            sweeper: true,
            announce: true,
        }
    }
}

/// HTTP/2 limits of each client connection (`server.http2` in the config
/// file). tonic leaves hyper's defaults in place unless told; these are set
/// on purpose (docs/ARCHITECTURE.md, "Transport").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transport {
    /// Calls open at once on one connection; a client past it waits for a
    /// free stream (the channel queues), it does not fail.
    pub max_concurrent_streams: u32,
    /// Streams this server may reset on its own, for errors, over one
    /// connection's life before it closes the connection with GOAWAY
    /// ENHANCE_YOUR_CALM "too_many_internal_resets". h2 never lowers the
    /// count, and a busy, healthy channel produces such resets (a client's
    /// last DATA frame landing after the call ended), so hyper's 1024 ends
    /// long-lived channels under load; the limit stays finite, as a guard
    /// against clients that make the server reset on purpose.
    pub max_local_error_reset_streams: u32,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            max_concurrent_streams: 1024,
            max_local_error_reset_streams: 1 << 20,
        }
    }
}

/// Serves the API on `listener` until shut down.
pub async fn start(
    app: App,
    verifier: Arc<Verifier>,
    listener: TcpListener,
    background: Background,
    transport: Transport,
) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let pool = app.pool.clone();
    store::capacity::ensure_system_slots(&pool, app.rules.limits.system)
        .await
        .context("sizing the pool of system concurrency slots")?;
    if background.sweeper {
        tokio::spawn(jobs::sweeper::run(app.clone(), shutdown.clone()));
        tokio::spawn(jobs::retention::run(app.clone(), shutdown.clone()));
    }
    let horizon = store::sessions::feed_horizon(&pool)
        .await
        .context("reading the feed's horizon")?;
    app.hub.start_at(horizon);
    tokio::spawn(watch::feed::run(pool.clone(), app.hub.clone(), shutdown.clone()));
    tokio::spawn(watch::relay::listen(pool.clone(), app.hub.clone(), shutdown.clone()));
    if background.announce {
        tokio::spawn(watch::relay::announce(pool.clone(), app.hub.clone(), shutdown.clone()));
    }
    let hub = app.hub.clone();
    let (routes, reporter) = grpc::routes(Arc::new(app))?;
    grpc::probe_database(&pool, &reporter).await;
    tokio::spawn(grpc::watch_database_health(pool, reporter.clone(), shutdown.clone()));

    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        // Small request/response messages: disable Nagle so replies are not held back.
        let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(transport.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(transport.max_local_error_reset_streams as usize))
            .layer(grpc::trace::layer())
            .layer(AuthLayer::new(verifier))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                stop.cancelled().await;
                for name in grpc::SERVICE_NAMES.into_iter().chain([""]) {
                    reporter
                        .set_service_status(name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                // End open streams cleanly so the graceful shutdown does not wait on them.
                hub.close();
            })
            .await
            .context("serving gRPC")
    });
    Ok(RunningServer { addr, shutdown, task })
}
