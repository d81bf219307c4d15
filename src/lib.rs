//! `mentorship`: a gRPC service that owns the lifecycle of mentorship bookings
//! and sessions.
//!
//! Layers, outermost first: [`grpc`] (tonic handlers, auth, status mapping) →
//! [`app`] (use cases) → [`domain`] (pure rules) and [`store`] (all SQL).
//! [`devdb`] runs the private PostgreSQL of `cargo run` and the tests;
//! [`cli`] holds the binary's commands.

pub mod app;
pub mod cli;
pub mod devdb;
pub mod domain;
pub mod grpc;
pub mod jobs;
pub mod metrics;
pub mod rest;
pub mod secret;
pub mod settings;
pub mod store;
pub mod transport;
pub mod watch;

pub use grpc::tls::Tls;
pub use store::pool::{DbTimeouts, connect, connect_for_tools, connect_with};
pub use transport::Transport;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    app::App,
    grpc::{
        auth::{Auth, Verifier},
        gate::Gate,
    },
};

/// A server running in the background of the current runtime.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
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
    /// The deadline sweeper (system timeouts, check-ins), the purge of old
    /// request ids, the retention purge, the census of the metrics and the
    /// webhook deliveries. Always on in production; tests that are not about time turn it
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
    store::capacity::ensure_system_slots(&app.pool, app.rules.limits.system)
        .await
        .context("sizing the pool of system concurrency slots")?;
    let endpoint = app.rules.webhooks.notifications.as_ref();
    store::webhooks::set_notification_endpoint(
        &app.pool,
        endpoint.map(|(url, secret)| (url.as_str(), secret.expose())),
    )
    .await
    .context("recording the notification endpoint")?;
    if let Err(err) = store::nesting::warn_at_start(&app.pool).await {
        tracing::warn!(error = %err, "could not read the values found nested too deep");
    }
    let builder = tonic::transport::Server::builder();
    // TLS of our own (grpc::tls), offering HTTP/1.1 as well as HTTP/2.
    let tls = transport.tls.as_ref().map(grpc::tls::server_config).transpose()?;
    // Bound now, served once everything else has started.
    let metrics_listener = match transport.metrics_addr {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the metrics address {at}"))?,
        ),
        None => None,
    };
    // Health, the jobs and the watch feed get small pools of their own: a
    // pool drained by the API's calls (rows held locked, a burst) never
    // stalls them, and they never take the API's connections.
    if background.sweeper {
        let jobs = App {
            pool: store::pool::side_pool(&app.pool, 2),
            ..app.clone()
        };
        tokio::spawn(jobs::sweeper::run(jobs.clone(), shutdown.clone()));
        tokio::spawn(jobs::retention::run(jobs.clone(), shutdown.clone()));
        tokio::spawn(jobs::census::run(jobs, shutdown.clone()));
        // Webhook attempts record their outcomes concurrently: a pool of
        // their own, so they never delay the sweeper's deadlines.
        let webhooks = App {
            pool: store::pool::side_pool(&app.pool, 4),
            ..app.clone()
        };
        tokio::spawn(jobs::webhooks::run(webhooks, shutdown.clone()));
    }
    let feed = store::pool::side_pool(&app.pool, 3);
    let horizon = store::feed::feed_horizon(&feed)
        .await
        .context("reading the feed's horizon")?;
    app.hub.start_at(horizon);
    tokio::spawn(watch::feed::run(
        feed.clone(),
        app.hub.clone(),
        app.rules.silent_connection,
        app.waits.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(watch::relay::listen(feed.clone(), app.hub.clone(), shutdown.clone()));
    if background.announce {
        tokio::spawn(watch::relay::announce(feed, app.hub.clone(), shutdown.clone()));
    }
    let hub = app.hub.clone();
    let metrics = app.metrics.clone();
    let exports_json_lines = app.rules.history.export_format == domain::query::ExportFormat::JsonLines;
    let refused = metrics.refused_connections.clone();
    let metrics_app = app.clone();
    let silent_connection = app.rules.silent_connection;
    let health = store::pool::side_pool(&app.pool, 1);
    let (routes, reporter) = grpc::routes(Arc::new(app))?;
    let waits = metrics_app.waits.clone();
    grpc::probe_database(&health, &reporter).await;
    tokio::spawn(grpc::watch_database_health(
        health,
        waits.clone(),
        reporter.clone(),
        shutdown.clone(),
    ));
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let bound = listener.local_addr()?;
            let stop = shutdown.clone();
            let registry = metrics_app.metrics.clone();
            let live = move || metrics_app.live();
            tokio::spawn(async move {
                if let Err(err) = metrics::serve(listener, registry, live, stop).await {
                    tracing::error!(error = %err, "serving metrics failed");
                }
            });
            Some(bound)
        }
        None => None,
    };

    let limiters = Arc::new(grpc::rate_limit::Limiters::new(transport.rate_limits));
    let rest = rest::Rest::layer(transport.event_keepalive, exports_json_lines)?;
    let cors = rest::cors(&transport.cors_allowed_origins)?;

    tokio::spawn(forget_idle_buckets(limiters.clone(), shutdown.clone()));
    let stop = shutdown.clone();
    let tls_stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let incoming = grpc::connections::incoming(listener, transport.connections, refused);
        let router = builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(transport.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(transport.max_local_error_reset_streams as usize))
            .http2_max_header_list_size(grpc::metadata_limit::transport_limit(transport.max_metadata_bytes))
            // REST and gRPC-web over HTTP/1.1 on the same port as gRPC.
            .accept_http1(true)
            .layer(tower::util::option_layer(cors))
            .layer(rest)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                http::header::AUTHORIZATION,
            ]))
            .layer(grpc::trace::layer())
            .layer(grpc::metered::Metered::layer(metrics))
            .layer(grpc::connections::Connections::layer())
            .layer(Gate::layer(grpc::metadata_limit::MetadataLimit::new(
                transport.max_metadata_bytes,
            )))
            .layer(grpc::health_watch::HealthWatch::layer(
                transport.health_watch_streams_per_peer,
                transport.health_watch_streams,
            ))
            .layer(Gate::layer(Auth::new(verifier)))
            .layer(Gate::layer(grpc::rate_limit::RateLimit(limiters)))
            .layer(grpc::deadline::Deadline::layer(
                transport.call_deadline,
                transport.max_calls_in_flight,
                silent_connection,
            ))
            .add_routes(routes);
        let stopped = async move {
            stop.cancelled().await;
            for name in grpc::SERVICE_NAMES.into_iter().chain([""]) {
                reporter
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            // End open streams cleanly so the graceful shutdown does not wait on them.
            hub.close();
        };
        match tls {
            Some(config) => {
                let incoming = grpc::tls::accept(incoming, config, transport.connections.handshake, tls_stop);
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
            None => router.serve_with_incoming_shutdown(incoming, stopped).await,
        }
        .context("serving the API")
    });
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown,
        task,
    })
}

/// Forgets the rate-limit buckets that have filled up again, every minute.
async fn forget_idle_buckets(limiters: Arc<grpc::rate_limit::Limiters>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => limiters.forget_idle(),
        }
    }
}
