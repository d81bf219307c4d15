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
pub mod metrics;
pub mod rest;
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
    grpc::{
        auth::{Auth, Verifier},
        gate::GateLayer,
    },
};

/// The PostgreSQL timeouts of the service's own connections
/// (`--db-*-timeout-ms`). Each bounds how long one call can hold a
/// connection, so a stuck row or a stuck client cannot drain the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    /// `statement_timeout`: the longest one statement may run. Every
    /// statement of the service is small (a row, a page, a batch); one that
    /// runs longer is stuck.
    pub statement: Duration,
    /// `lock_timeout`: the longest a statement waits for a row lock. A call
    /// past it fails fast with ABORTED / LOCK_TIMEOUT (retryable) instead of
    /// holding its connection behind a lock someone else keeps.
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`: a unit of work never waits on
    /// anything but the database; a transaction left open would hold back
    /// every WatchSessions feed in the cluster (docs/ARCHITECTURE.md,
    /// "Watching").
    pub idle_in_transaction: Duration,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        DbTimeouts {
            statement: Duration::from_secs(15),
            lock: Duration::from_secs(1),
            idle_in_transaction: Duration::from_secs(10),
        }
    }
}

/// Applies pending migrations (on a connection of their own, free of the
/// service's timeouts: building an index may take a while), then opens the
/// service's pool with the default [`DbTimeouts`].
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_with(database_url, max_connections, DbTimeouts::default()).await
}

/// [`connect`] with the given timeouts on every connection.
pub async fn connect_with(database_url: &str, max_connections: u32, timeouts: DbTimeouts) -> anyhow::Result<PgPool> {
    let millis = |d: Duration| d.as_millis().to_string();
    let options = migrate(database_url).await?.options([
        ("statement_timeout", millis(timeouts.statement)),
        ("lock_timeout", millis(timeouts.lock)),
        (
            "idle_in_transaction_session_timeout",
            millis(timeouts.idle_in_transaction),
        ),
    ]);
    pool(options, max_connections).await
}

/// A small pool of its own, with the connection settings of `pool`, for
/// work that must not wait behind the API's calls (health, the sweeper,
/// the watch feed). Connections open on first use.
fn side_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    pool_options(max_connections, CheckOnRelease::Always).connect_lazy_with((*pool.connect_options()).clone())
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
    pool_options(max_connections, CheckOnRelease::WhenWorkIsQueued)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// A connection idle for at least this long is pinged before it is handed
/// out; one used more recently is trusted.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long that ping may take before the connection is presumed silent.
/// (Generous: a database that is only busy must not lose its connections.)
const PING_LIMIT: Duration = Duration::from_secs(2);

/// How long a connection handed back in the middle of a statement (its call
/// was given up, or ran past its bound) may take to answer the ROLLBACK
/// queued on it; one that does not is closed rather than kept, so a silent
/// connection never holds a place in the pool. (Closing a connection that
/// was only slow costs a reconnect.)
const RELEASE_LIMIT: Duration = Duration::from_secs(5);

/// How every pool of the service hands out connections. sqlx pings each
/// idle connection before handing it out by default: a round trip more for
/// every call, which doubles a read's database time. Here only a connection
/// that has sat idle for [`PING_WHEN_IDLE_FOR`] is pinged, which is when a
/// database restart may have broken it unseen (health notices an outage
/// within seconds); a call that meets a connection broken since its last use
/// fails UNAVAILABLE, retryable, like the calls in flight at the restart.
/// When a connection handed back is checked within [`RELEASE_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckOnRelease {
    /// Only one with work queued on it (a transaction dropped half-way
    /// queues its ROLLBACK): the API's pool, where a check on every release
    /// would add a round trip per call. A plain statement dropped while its
    /// answer was awaited leaves nothing queued; sqlx's own release ping
    /// then has no bound (docs/OPERATIONS.md, "Silent database connections").
    WhenWorkIsQueued,
    /// Every one: the small pools of the background work (the feed, health,
    /// the jobs), whose bounded reads (`store::bounded`) drop plain
    /// statements, and which must not lose their few connections to silence.
    Always,
}

fn pool_options(max_connections: u32, check: CheckOnRelease) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    // A ping that gets no answer finds a silent connection:
                    // the error closes it instead of handing it out.
                    match tokio::time::timeout(PING_LIMIT, conn.ping()).await {
                        Ok(pinged) => pinged?,
                        Err(_) => {
                            return Err(sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the connection did not answer a ping",
                            )));
                        }
                    }
                }
                Ok(true)
            })
        })
        // Read-only is not the primary: a connection that lands on a node in
        // recovery (a standby, or a demoted primary a proxy still routes to)
        // is refused as it opens, and the pool tries again.
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut *conn)
                    .await?;
                if in_recovery {
                    return Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the database server is in recovery (a standby), not the primary",
                    )));
                }
                Ok(())
            })
        })
        // A connection handed back with work still queued on it (a call's
        // transaction dropped half-way), or any connection of a background
        // pool, answers within RELEASE_LIMIT or is closed. sqlx then pings
        // every connection it takes back, which a broken one fails: a
        // connection that met a connection-class error is closed, never
        // handed out again.
        .after_release(move |conn, _meta| {
            Box::pin(async move {
                if check == CheckOnRelease::WhenWorkIsQueued && !sqlx::Connection::should_flush(&*conn) {
                    return Ok(true);
                }
                match tokio::time::timeout(RELEASE_LIMIT, conn.ping()).await {
                    Ok(pinged) => pinged.map(|()| true),
                    Err(_) => {
                        crate::metrics::database_error("silent_connection");
                        Ok(false)
                    }
                }
            })
        })
}

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

/// How the server serves: the HTTP/2 limits of each client connection
/// (`server.http2` in the config file; tonic leaves hyper's defaults in place
/// unless told, so these are set on purpose, docs/ARCHITECTURE.md,
/// "Transport"), deadlines and caps, TLS, and where metrics are served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
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
    /// The deadline of every call (`server.call_deadline_seconds`), or the
    /// caller's `grpc-timeout` when sooner (`grpc::complete`).
    #[serde(skip)]
    pub call_deadline: Duration,
    /// Most grpc.health.v1.Health/Watch streams open at once
    /// (`server.max_health_watch_streams`)…
    #[serde(skip)]
    pub health_watch_streams: usize,
    /// …and from one peer address (`server.max_health_watch_streams_per_peer`).
    #[serde(skip)]
    pub health_watch_streams_per_peer: usize,
    /// Each caller's budgets of reads, writes and stream opens on this
    /// replica (`server.rate_limits`).
    #[serde(skip)]
    pub rate_limits: grpc::rate_limit::RateLimits,
    /// The bounds on client connections: a cap, the handshake deadline and
    /// the idle timeout (`server.max_connections`, …).
    #[serde(skip)]
    pub connections: grpc::connections::ConnectionLimits,
    /// The largest request metadata accepted (`server.max_metadata_bytes`);
    /// the transport takes header lists up to four times larger, so that a
    /// request between the two gets a status clients can read.
    #[serde(skip)]
    pub max_metadata_bytes: u32,
    /// Most calls whose work runs at once (`server.max_calls_in_flight`),
    /// answered or not; past it a call is UNAVAILABLE / OVERLOADED.
    #[serde(skip)]
    pub max_calls_in_flight: usize,
    /// Browser origins allowed by CORS (`server.cors_allowed_origins`);
    /// none: no CORS headers at all.
    #[serde(skip)]
    pub cors_allowed_origins: Vec<String>,
    /// How often an idle event stream gets a comment line
    /// (`server.event_stream_keepalive_seconds`).
    #[serde(skip)]
    pub event_keepalive: Duration,
    /// Where `/metrics` is served (`MENTORSHIP_METRICS_ADDR`); none: not served.
    #[serde(skip)]
    pub metrics_addr: Option<SocketAddr>,
    /// TLS (`MENTORSHIP_TLS_*`); none: plaintext.
    #[serde(skip)]
    pub tls: Option<Tls>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            max_concurrent_streams: 1024,
            max_local_error_reset_streams: 1 << 20,
            call_deadline: grpc::complete::DEFAULT_DEADLINE,
            health_watch_streams: 1024,
            health_watch_streams_per_peer: 16,
            rate_limits: grpc::rate_limit::RateLimits::default(),
            max_metadata_bytes: grpc::metadata_limit::DEFAULT_MAX_METADATA_BYTES,
            connections: grpc::connections::ConnectionLimits::default(),
            max_calls_in_flight: grpc::complete::DEFAULT_MAX_IN_FLIGHT,
            cors_allowed_origins: Vec::new(),
            event_keepalive: Duration::from_secs(15),
            metrics_addr: None,
            tls: None,
        }
    }
}

/// The server's TLS certificate chain and key, and for mutual TLS the CA
/// that every client's certificate must chain to (PEM, as read from the
/// `MENTORSHIP_TLS_*` files).
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Tls {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

impl Tls {
    /// Reads the PEM files.
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Tls> {
        let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        Ok(Tls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: client_ca.map(read).transpose()?,
        })
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
            pool: side_pool(&app.pool, 2),
            ..app.clone()
        };
        tokio::spawn(jobs::sweeper::run(jobs.clone(), shutdown.clone()));
        tokio::spawn(jobs::retention::run(jobs.clone(), shutdown.clone()));
        tokio::spawn(jobs::census::run(jobs, shutdown.clone()));
        // Webhook attempts record their outcomes concurrently: a pool of
        // their own, so they never delay the sweeper's deadlines.
        let webhooks = App {
            pool: side_pool(&app.pool, 4),
            ..app.clone()
        };
        tokio::spawn(jobs::webhooks::run(webhooks, shutdown.clone()));
    }
    let feed = side_pool(&app.pool, 3);
    let horizon = store::sessions::feed_horizon(&feed)
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
    let health = side_pool(&app.pool, 1);
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
            tokio::spawn(async move {
                if let Err(err) = metrics::serve(listener, metrics_app, stop).await {
                    tracing::error!(error = %err, "serving metrics failed");
                }
            });
            Some(bound)
        }
        None => None,
    };

    let limiters = Arc::new(grpc::rate_limit::Limiters::new(transport.rate_limits));
    let rest = rest::RestLayer::new(transport.event_keepalive, exports_json_lines)?;
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
            .layer(grpc::metered::MeteredLayer::new(metrics))
            .layer(grpc::connections::ConnectionLayer)
            .layer(GateLayer::new(grpc::metadata_limit::MetadataLimit::new(
                transport.max_metadata_bytes,
            )))
            .layer(grpc::health_watch::HealthWatchLayer::new(
                transport.health_watch_streams_per_peer,
                transport.health_watch_streams,
            ))
            .layer(GateLayer::new(Auth::new(verifier)))
            .layer(GateLayer::new(grpc::rate_limit::RateLimit(limiters)))
            .layer(grpc::complete::CompleteLayer::new(
                transport.call_deadline,
                transport.max_calls_in_flight,
                silent_connection,
                waits,
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
