//! How the server serves: its HTTP/2 limits, deadlines, caps and TLS.

use std::{net::SocketAddr, time::Duration};

use crate::grpc;

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
    /// caller's `grpc-timeout` when sooner (`grpc::deadline`).
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
    pub tls: Option<grpc::tls::Tls>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            max_concurrent_streams: 1024,
            max_local_error_reset_streams: 1 << 20,
            call_deadline: grpc::deadline::DEFAULT_DEADLINE,
            health_watch_streams: 1024,
            health_watch_streams_per_peer: 16,
            rate_limits: grpc::rate_limit::RateLimits::default(),
            max_metadata_bytes: grpc::metadata_limit::DEFAULT_MAX_METADATA_BYTES,
            connections: grpc::connections::ConnectionLimits::default(),
            max_calls_in_flight: grpc::deadline::DEFAULT_MAX_IN_FLIGHT,
            cors_allowed_origins: Vec::new(),
            event_keepalive: Duration::from_secs(15),
            metrics_addr: None,
            tls: None,
        }
    }
}
