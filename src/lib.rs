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
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    app::App,
    grpc::auth::{AuthLayer, Verifier},
};

/// Opens a pool and applies pending migrations.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
        .context("connecting to PostgreSQL")?;
    store::MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
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
}

impl Default for Background {
    fn default() -> Self {
        Background { sweeper: true }
    }
}

/// Serves the API on `listener` until shut down.
pub async fn start(
    app: App,
    verifier: Arc<Verifier>,
    listener: TcpListener,
    background: Background,
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
    tokio::spawn(watch::listen(app.pool.clone(), app.hub.clone(), shutdown.clone()));
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
