//! Use cases: authorize → load → decide (domain) → persist (store).
//! Nothing here knows about tonic; handlers call these with parsed values.

pub(crate) mod assignment;
pub(crate) mod bookings;
pub(crate) mod capacity;
pub(crate) mod directory;
pub mod export;
pub(crate) mod history;
pub(crate) mod mutation;
pub(crate) mod page;
pub(crate) mod quotas;
pub(crate) mod reschedule;
pub(crate) mod sessions;
pub mod targets;
pub mod watch;
pub(crate) mod webhooks;

use sqlx::PgPool;

/// The unit of work a change is made in (`store::unit`).
pub use crate::store::unit::Unit;

use crate::domain::{
    booking::DurationBounds,
    clocks::Timeouts,
    config::{ConfigLimits, SessionConfig, Template},
};

/// The current time at the database's precision (microseconds), so a
/// session a use case returns is exactly the one stored.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// A batch read's answer (AIP-231): the rows of `ids` in that order, or
/// the first id that does not exist (NOT_FOUND) or that the caller may not
/// see (PERMISSION_DENIED), named.
pub(crate) fn in_order<T: Clone>(
    ids: Vec<uuid::Uuid>,
    found: Vec<T>,
    id_of: impl Fn(&T) -> uuid::Uuid,
    resource: crate::domain::Resource,
    visible: impl Fn(&T) -> bool,
) -> crate::domain::Result<Vec<T>> {
    let by_id: std::collections::HashMap<uuid::Uuid, T> = found.into_iter().map(|t| (id_of(&t), t)).collect();
    ids.into_iter()
        .map(|id| match by_id.get(&id) {
            None => Err(crate::domain::Error::not_found(resource, id)),
            Some(t) if !visible(t) => Err(crate::domain::Error::denied(format!(
                "{} {id} is not one the caller may read: only its participants, coordinators and services may",
                resource.as_str()
            ))),
            Some(t) => Ok(t.clone()),
        })
        .collect()
}

impl Rules {
    /// What every booked time must meet (CreateBooking, RescheduleBooking).
    pub fn time_rules(&self) -> crate::domain::booking::TimeRules {
        crate::domain::booking::TimeRules {
            bounds: self.booking_bounds,
            min_notice: self.min_notice,
        }
    }
}

/// The configurable rules the use cases apply.
#[derive(Debug, Clone)]
pub struct Rules {
    pub booking_bounds: DurationBounds,
    /// How long before its start a booking must be made.
    pub min_notice: chrono::Duration,
    /// How long a coalesced read waits for its answer before its connection
    /// is presumed silent (a hung backend, a cut network, an old primary
    /// behind a proxy) and closed: past the statement timeout, which only
    /// the server enforces and a silent connection never reports.
    pub silent_connection: std::time::Duration,
    pub timeouts: Timeouts,
    /// Concurrency slots of a mentor whose profile sets no limit.
    pub default_mentor_limit: i32,
    /// Concurrency slots per mentee and system-wide, and the queue's length.
    pub limits: crate::domain::capacity::Limits,
    /// How mentors are assigned to sessions started on demand.
    pub assignment: crate::domain::assignment::Assignment,
    /// Config of sessions created without a template.
    pub default_session_config: SessionConfig,
    /// Bounds of per-session config values.
    pub config_limits: ConfigLimits,
    /// Built-in templates, replaced or extended by the config file's.
    pub templates: Vec<Template>,
    /// How long request ids are remembered (at least 24 h).
    pub idempotency_retention_hours: i32,
    /// The feed reader reads at least this often, covering lost notifications.
    pub watch_backstop: std::time::Duration,
    /// Deliveries buffered per replica before a slow stream falls behind and
    /// catches up from the database.
    pub watch_buffer: usize,
    /// Open WatchSession and WatchSessions streams: most per caller (`sub`)
    /// and most per replica.
    pub watch_streams: StreamLimits,
    /// Export and retention of history (SPEC §4.4).
    pub history: History,
    /// How webhook deliveries are attempted and retried.
    pub webhooks: WebhookRules,
}

/// How webhook deliveries are attempted and retried.
#[derive(Debug, Clone)]
pub struct WebhookRules {
    /// The notification endpoint's URL and signing secret, when configured.
    pub notifications: Option<(String, crate::secret::Secret)>,
    /// A failing delivery is retried for this long, then FAILED.
    pub retry_period: chrono::Duration,
    /// The longest one attempt takes.
    pub timeout: std::time::Duration,
    /// A claimed delivery is not claimed again before this (a replica that
    /// died mid-attempt leaves it to another after it).
    pub lease: std::time::Duration,
    /// Where subscriptions' deliveries may go (`webhooks.allow_private_targets`).
    pub targets: targets::Targets,
}

/// Most open streams per caller and per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub per_caller: usize,
    pub per_replica: usize,
}

impl StreamLimits {
    /// The defaults of watch streams: one caller may hold 100, a small
    /// share of a replica's 10,000.
    pub const WATCH: StreamLimits = StreamLimits {
        per_caller: 100,
        per_replica: 10_000,
    };
}

/// How history is exported and how long it is kept.
#[derive(Debug, Clone, Copy)]
pub struct History {
    /// Terminal sessions (and bookings that never got one) older than this are purged.
    pub retention: chrono::Duration,
    /// ExportSessions' format when the request names none.
    pub export_format: crate::domain::query::ExportFormat,
    /// Concurrent ExportSessions streams per caller (`sub`) on one replica.
    pub exports_per_caller: usize,
    /// Sessions (and sessionless bookings) per purge transaction.
    pub purge_batch: i64,
}

/// The service's use cases over one database.
#[derive(Debug, Clone)]
pub struct App {
    pub pool: PgPool,
    pub rules: Rules,
    /// This replica's fan-out of change hints to watchers.
    pub hub: crate::watch::Hub,
    /// ExportSessions streams running on this replica, per caller.
    pub exports: quotas::Exports,
    /// WatchSession and WatchSessions streams open on this replica.
    pub watches: quotas::Quota,
    /// This replica's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// GetSession's reads, coalesced.
    pub coalescer: crate::store::coalescer::Coalescer,
    /// The replica's database work under way, for health.
    pub waits: crate::store::waits::Waits,
}

impl App {
    pub fn new(pool: PgPool, rules: Rules) -> Self {
        let hub = crate::watch::Hub::new(rules.watch_backstop, rules.watch_buffer);
        let exports = quotas::Exports::new(rules.history.exports_per_caller);
        let watches = quotas::Quota::new(quotas::QuotaLimits {
            what: "watch streams",
            reason: crate::domain::Reason::TooManyStreams,
            caller: "caller",
            per_caller: (rules.watch_streams.per_caller, "watch_streams_per_caller"),
            total: (rules.watch_streams.per_replica, "watch_streams_per_replica"),
        });
        let metrics: std::sync::Arc<crate::metrics::Metrics> = Default::default();
        let waits = crate::store::waits::Waits::new(rules.silent_connection);
        App {
            coalescer: crate::store::coalescer::Coalescer::new(
                pool.clone(),
                metrics.clone(),
                rules.silent_connection,
                waits.clone(),
            ),
            waits,
            pool,
            rules,
            hub,
            exports,
            watches,
            metrics,
        }
    }

    /// What the metrics read live at a scrape.
    pub fn live(&self) -> crate::metrics::Live {
        crate::metrics::Live {
            watch_streams: self.watches.held(),
            feed_lag: self.hub.feed_lag(),
            notifier_lag: self.hub.notifier_lag(),
            pool_size: self.pool.size(),
            pool_idle: self.pool.num_idle(),
            pool_max: self.pool.options().get_max_connections(),
        }
    }

    /// Opens a unit of work: the transaction every change is made in.
    pub async fn unit(&self) -> crate::domain::Result<crate::store::unit::Unit> {
        let _waiting = self.metrics.waiting_for_connection();
        Unit::begin(&self.pool, self.rules.timeouts, self.waits.begin()).await
    }

    /// Commits `unit`, then counts its status changes and hands its events
    /// on to this replica's watchers (`watch::Hub::committed`).
    pub async fn commit(&self, unit: Unit) -> crate::domain::Result<()> {
        let events = unit.commit().await?;
        // Status changes only: a stage change or a config update keeps the status.
        for e in &events {
            if let Some(to) = e.event.to_status
                && e.event.from_status != Some(to)
            {
                self.metrics.status_changed(e.event.from_status, to);
            }
        }
        self.hub.committed(events);
        Ok(())
    }

    /// One pooled connection, for reads.
    async fn connection(&self) -> crate::domain::Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        let _waiting = self.metrics.waiting_for_connection();
        self.pool.acquire().await.map_err(crate::domain::Error::from)
    }
}
