//! The service's connection pools: the API's, with the service's timeouts
//! set on every connection and the checks that keep a silent or read-only
//! connection from being handed out, and the small side pools of the
//! background work and health.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Context;

use super::waits::now_ms;
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
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

/// The embedded migrations of `migrations/`. Migrations only ever add
/// (tables, columns with defaults, indexes), so a replica of the previous
/// release keeps working on a database a newer one has migrated, and may
/// even restart on it: migrations it does not know are ignored rather than
/// refused (docs/OPERATIONS.md, "Upgrading").
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!()
};

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
pub(crate) fn side_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options()).clone();
    pool_options(max_connections, CheckOnRelease::Always, &options).connect_lazy_with(options)
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
    MIGRATOR.run(&mut migrating).await.context("applying migrations")?;
    migrating.close().await.context("closing the migration connection")?;
    Ok(options)
}

async fn pool(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<PgPool> {
    pool_options(max_connections, CheckOnRelease::WhenWorkIsQueued, &options)
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

/// Until when (on the process's monotonic clock, `waits::now_ms`) the API's
/// pool checks every connection handed back: set just before work waiting
/// on the database is dropped ([`check_releases_for_a_while`]).
static CHECK_RELEASES_UNTIL: AtomicU64 = AtomicU64::new(0);

/// Work that waited on the database past its bound is about to be dropped:
/// a plain statement among it leaves nothing queued on its connection, yet
/// waits for an answer, which sqlx's own check of the connection it takes
/// back then waits for too, with no bound. So for the next seconds the
/// API's pool checks every connection handed back within [`RELEASE_LIMIT`],
/// as the background pools always do. (One process is one replica: this is
/// process-wide, as the database error counts are.)
pub(crate) fn check_releases_for_a_while() {
    let until = now_ms() + (2 * RELEASE_LIMIT).as_millis() as u64;
    CHECK_RELEASES_UNTIL.fetch_max(until, Ordering::Relaxed);
}

fn checking_releases() -> bool {
    now_ms() < CHECK_RELEASES_UNTIL.load(Ordering::Relaxed)
}

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
    /// queues its ROLLBACK), or any in the seconds after work waiting on
    /// the database was dropped ([`check_releases_for_a_while`]: a plain
    /// statement dropped while its answer was awaited leaves nothing
    /// queued): the API's pool, where a check on every release would add a
    /// round trip per call.
    WhenWorkIsQueued,
    /// Every one: the small pools of the background work (the feed, health,
    /// the jobs), whose bounded reads (`store::bounded`) drop plain
    /// statements, and which must not lose their few connections to silence.
    Always,
}

fn pool_options(max_connections: u32, check: CheckOnRelease, options: &PgConnectOptions) -> PgPoolOptions {
    let database = std::sync::Arc::new(options.clone());
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
        // is refused as it opens, and the pool tries again. Every new
        // connection gets TCP keepalive and a user timeout (`keepalive`).
        .after_connect(move |conn, _meta| {
            let database = database.clone();
            Box::pin(async move {
                super::keepalive::arm(&database).await;
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
                if check == CheckOnRelease::WhenWorkIsQueued
                    && !sqlx::Connection::should_flush(&*conn)
                    && !checking_releases()
                {
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
