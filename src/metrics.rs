//! The replica's Prometheus metrics (`prometheus-client`) and how they are
//! rendered ([`Format`]: OpenMetrics when the scraper asks, text 0.0.4
//! otherwise). Each replica owns one [`Metrics`]; only database errors are
//! counted process-wide. Gauges of live state render from a [`Live`]
//! snapshot taken at scrape time. docs/OPERATIONS.md lists every metric.

use std::{
    fmt::Write as _,
    sync::{
        LazyLock, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::domain::session::SessionStatus;

/// A gauge of seconds (or any fraction).
type Seconds = Gauge<f64, AtomicU64>;

/// The labels of a call, as go-grpc-prometheus names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Rpc {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Handled {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_type: &'static str,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Transition {
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// Bounds of the call latency histogram, in seconds: 0.5 ms to about 30 s.
fn latency_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Database errors by kind, for the whole process (see the module docs).
static DB_ERRORS: LazyLock<Family<Kind, Counter>> = LazyLock::new(Family::default);

/// Counts one database error of `kind` (`store::error_kind`: `lock_timeout`,
/// `statement_timeout`, `unavailable`, `pool_timeout`,
/// `serialization_failure`, `deadlock`, `constraint`, `other`).
pub fn database_error(kind: &'static str) {
    DB_ERRORS.get_or_create(&Kind { kind }).inc();
}

/// The census: sessions by status and the queue, as one replica last counted them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    pub counted_at: Option<DateTime<Utc>>,
    /// Every status, with its count (zero included).
    pub sessions: Vec<(SessionStatus, i64)>,
    pub queued: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// One replica's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Family<Rpc, Counter>,
    handled: Family<Handled, Counter>,
    handling: Family<Rpc, Histogram, fn() -> Histogram>,
    transitions: Family<Transition, Counter>,
    sessions: Family<Status, Gauge>,
    census_age: Seconds,
    queue_length: Gauge,
    queue_oldest_age: Seconds,
    watch_streams: Gauge,
    feed_lag: Seconds,
    notifier_lag: Seconds,
    sweeper_lag: Seconds,
    pool_size: Gauge,
    pool_in_use: Gauge,
    pool_max: Gauge,
    pool_waiting: Gauge,
    /// Connections closed at accept, the replica having as many as it takes.
    pub refused_connections: Counter,
    /// The census last read, and the sweeper's next deadline: scrape-time
    /// inputs whose ages are computed when scraped.
    census: Mutex<Census>,
    sweeper_next: Mutex<Option<DateTime<Utc>>>,
    /// Calls waiting for a pooled connection right now.
    waiting: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(latency_buckets),
            transitions: Family::default(),
            sessions: Family::default(),
            census_age: Seconds::default(),
            queue_length: Gauge::default(),
            queue_oldest_age: Seconds::default(),
            watch_streams: Gauge::default(),
            feed_lag: Seconds::default(),
            notifier_lag: Seconds::default(),
            sweeper_lag: Seconds::default(),
            pool_size: Gauge::default(),
            pool_in_use: Gauge::default(),
            pool_max: Gauge::default(),
            pool_waiting: Gauge::default(),
            refused_connections: Counter::default(),
            census: Mutex::default(),
            sweeper_next: Mutex::default(),
            waiting: AtomicI64::new(0),
        };
        let r = &mut m.registry;
        r.register("grpc_server_started", "Calls started, by method", m.started.clone());
        r.register(
            "grpc_server_handled",
            "Calls finished, by method and status code (a stream when it ends)",
            m.handled.clone(),
        );
        r.register(
            "grpc_server_handling_seconds",
            "Time from a call's start to its status, by method",
            m.handling.clone(),
        );
        let s = r.sub_registry_with_prefix("mentorship");
        s.register(
            "session_transitions",
            "Session status changes committed by this replica (from NONE: created)",
            m.transitions.clone(),
        );
        s.register(
            "sessions",
            "Sessions by status, as of the last census (the same on every replica: aggregate with max)",
            m.sessions.clone(),
        );
        s.register(
            "census_age_seconds",
            "How long ago the census of sessions and the queue was taken",
            m.census_age.clone(),
        );
        s.register(
            "queue_length",
            "Sessions waiting for a slot, as of the last census",
            m.queue_length.clone(),
        );
        s.register(
            "queue_oldest_age_seconds",
            "How long the longest-waiting queued session has waited (0: none), as of the last census",
            m.queue_oldest_age.clone(),
        );
        s.register(
            "watch_streams",
            "WatchSession and WatchSessions streams open on this replica",
            m.watch_streams.clone(),
        );
        s.register(
            "feed_lag_seconds",
            "How long the oldest commit this replica knows of has waited for its feed reader",
            m.feed_lag.clone(),
        );
        s.register(
            "notifier_lag_seconds",
            "How long this replica's oldest unannounced commit has waited for its NOTIFY",
            m.notifier_lag.clone(),
        );
        s.register(
            "sweeper_lag_seconds",
            "How far the sweeper is behind its oldest due deadline (0: nothing due)",
            m.sweeper_lag.clone(),
        );
        s.register(
            "db_pool_connections",
            "Connections open in the API's pool",
            m.pool_size.clone(),
        );
        s.register(
            "db_pool_in_use",
            "Connections of the API's pool in use",
            m.pool_in_use.clone(),
        );
        s.register(
            "db_pool_max",
            "Most connections the API's pool opens",
            m.pool_max.clone(),
        );
        s.register(
            "db_pool_waiting",
            "Calls (and jobs) waiting for a pooled connection, from asking for one until their transaction has begun",
            m.pool_waiting.clone(),
        );
        s.register("db_errors", "Database errors by kind (this process)", DB_ERRORS.clone());
        s.register(
            "connections_refused",
            "Connections closed as soon as accepted: the replica had server.max_connections open",
            m.refused_connections.clone(),
        );
        m
    }

    /// A call started.
    pub fn started(&self, rpc: &Rpc) {
        self.started.get_or_create(rpc).inc();
    }

    /// A call ended with `code` after `elapsed`.
    pub fn handled(&self, rpc: &Rpc, code: tonic::Code, elapsed: Duration) {
        let handled = Handled {
            grpc_service: rpc.grpc_service,
            grpc_method: rpc.grpc_method,
            grpc_type: rpc.grpc_type,
            grpc_code: code_name(code),
        };
        self.handled.get_or_create(&handled).inc();
        self.handling.get_or_create(rpc).observe(elapsed.as_secs_f64());
    }

    /// A session's status changed (`from` is `None` when it was created).
    pub fn status_changed(&self, from: Option<SessionStatus>, to: SessionStatus) {
        let from = from.map_or("NONE", SessionStatus::as_str);
        let to = to.as_str();
        self.transitions.get_or_create(&Transition { from, to }).inc();
    }

    /// A call waits for a pooled connection until the guard drops.
    pub fn waiting_for_connection(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(self)
    }

    /// The census just read.
    pub fn set_census(&self, census: Census) {
        *self.census.lock().unwrap_or_else(PoisonError::into_inner) = census;
    }

    /// The sweeper's earliest pending deadline after its last pass.
    pub fn set_sweeper_next(&self, next: Option<DateTime<Utc>>) {
        *self.sweeper_next.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// The metrics as OpenMetrics text, with the gauges read `live` now.
    pub fn render(&self, live: &Live) -> String {
        self.refresh(live);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            let _ = writeln!(text, "# encoding failed\n# EOF");
        }
        text
    }

    fn refresh(&self, live: &Live) {
        let now = Utc::now();
        let age = |at: DateTime<Utc>| (now - at).to_std().unwrap_or_default().as_secs_f64();
        let census = self.census.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (status, count) in &census.sessions {
            let status = status.as_str();
            self.sessions.get_or_create(&Status { status }).set(*count);
        }
        self.census_age.set(census.counted_at.map_or(f64::NAN, age));
        self.queue_length.set(census.queued);
        self.queue_oldest_age.set(census.oldest_queued_at.map_or(0.0, age));
        self.watch_streams.set(live.watch_streams as i64);
        self.feed_lag.set(live.feed_lag.as_secs_f64());
        self.notifier_lag.set(live.notifier_lag.as_secs_f64());
        let next = *self.sweeper_next.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweeper_lag.set(next.map_or(0.0, age));
        let size = i64::from(live.pool_size);
        self.pool_size.set(size);
        // Read apart from the size, the idle count may be a moment newer.
        self.pool_in_use.set((size - live.pool_idle as i64).max(0));
        self.pool_max.set(i64::from(live.pool_max));
        self.pool_waiting
            .set(self.waiting.load(std::sync::atomic::Ordering::Relaxed).max(0));
    }
}

/// The gauges that are read, not counted: what is live on the replica the
/// moment the metrics are rendered (`App::live`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub watch_streams: usize,
    pub feed_lag: std::time::Duration,
    pub notifier_lag: std::time::Duration,
    pub pool_size: u32,
    pub pool_idle: usize,
    pub pool_max: u32,
}

/// See [`Metrics::waiting_for_connection`].
pub struct Waiting<'a>(&'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The canonical name of a code, as gRPC's own metrics spell it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The two text formats of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0: counters are families `x` with samples `x_total`, and `# EOF` ends it.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: every family is named as its samples are.
    Prometheus,
}

impl Format {
    /// The format a scrape's `Accept` header prefers: OpenMetrics only when
    /// it names `application/openmetrics-text` with a weight above every
    /// other type it names; the 0.0.4 text otherwise (the format every
    /// scraper reads, and Prometheus's own client libraries' fallback).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best = (0.0_f32, Format::Prometheus);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let format = match parts.next().unwrap_or_default().to_ascii_lowercase().as_str() {
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" | "*/*" | "text/*" => Format::Prometheus,
                _ => continue,
            };
            let weight = parts
                .find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse().ok()))
                .unwrap_or(1.0);
            if weight > best.0 {
                best = (weight, format);
            }
        }
        best.1
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's
/// `# HELP` and `# TYPE` name its samples (`x_total`), `unknown` is
/// `untyped`, and `# UNIT` and `# EOF` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            let counter = lines
                .peek()
                .is_some_and(|next| *next == format!("# TYPE {name} counter"));
            if counter {
                let help = rest[name.len()..].trim_start();
                let _ = writeln!(out, "# HELP {name}_total {help}");
                let _ = writeln!(out, "# TYPE {name}_total counter");
                lines.next();
                continue;
            }
        }
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|t| t.strip_suffix(" unknown")) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Serves `/metrics` on `listener` until `shutdown`: `metrics`, with the
/// gauges `live` reads at each scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    live: impl Fn() -> Live + Clone + Send + Sync + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use axum::{
        http::{HeaderMap, header},
        routing::get,
    };
    let router = axum::Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let (metrics, live) = (metrics.clone(), live.clone());
            async move {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = Format::negotiate(accept);
                let text = metrics.render(&live());
                let body = match format {
                    Format::OpenMetrics => text,
                    Format::Prometheus => to_prometheus_text(&text),
                };
                ([(header::CONTENT_TYPE, format.content_type())], body)
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrapers_accept_header_chooses_the_format() {
        use Format::*;
        let prometheus_server = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus_server)), OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain; version=0.0.4")), Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.1")),
            Prometheus
        );
        assert_eq!(Format::negotiate(Some("*/*")), Prometheus);
        assert_eq!(Format::negotiate(None), Prometheus);
    }

    #[test]
    fn openmetrics_counters_become_families_named_as_their_samples() {
        let om = "# HELP calls Calls.\n# TYPE calls counter\ncalls_total{a=\"b\"} 1\n\
                  # HELP lag_seconds Lag.\n# TYPE lag_seconds gauge\n# UNIT lag_seconds seconds\nlag_seconds 2\n\
                  # HELP odd Odd.\n# TYPE odd unknown\nodd 3\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP calls_total Calls.\n# TYPE calls_total counter\ncalls_total{a=\"b\"} 1\n\
             # HELP lag_seconds Lag.\n# TYPE lag_seconds gauge\nlag_seconds 2\n\
             # HELP odd Odd.\n# TYPE odd untyped\nodd 3\n"
        );
    }

    #[test]
    fn every_code_has_its_canonical_name() {
        for i in 0..=16 {
            let code = tonic::Code::from_i32(i);
            let name = code_name(code);
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
        }
        assert_eq!(code_name(tonic::Code::FailedPrecondition), "FAILED_PRECONDITION");
    }
}
