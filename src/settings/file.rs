//! The YAML service config file (SPEC §8), and its validation into the
//! rules the use cases run by (`ServiceConfig::rules`, the one source of
//! every default).

use std::net::SocketAddr;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

use crate::app::{History, Rules};
use crate::domain::{
    assignment::{self, Assignment},
    booking::DurationBounds,
    capacity::Limits,
    clocks::Timeouts,
    config::{ConfigLimits, EscalationPolicy, SessionConfig, Template},
    query,
};
use crate::secret::Secret;

use crate::grpc::connections::ConnectionLimits;

/// The YAML service config file (SPEC §8). Every field is optional; unknown
/// fields are refused so a typo never silently falls back to a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub server: ServerSection,
    pub session_management: SessionManagement,
    /// `bookings:` (`booking:` is read as the same section).
    #[serde(alias = "booking")]
    pub bookings: BookingSection,
    pub webhooks: WebhookSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Overridden by `MENTORSHIP_LISTEN_ADDR` / `--listen-addr`.
    pub listen_addr: Option<SocketAddr>,
    /// Overridden by `MENTORSHIP_METRICS_ADDR` / `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// HTTP/2 limits of every connection.
    pub http2: crate::transport::Transport,
    /// The deadline of a call that sends no shorter `grpc-timeout`.
    pub call_deadline_seconds: Option<f64>,
    /// Most WatchSession and WatchSessions streams open on a replica…
    pub max_watch_streams: usize,
    /// …and per caller (`sub`).
    pub max_watch_streams_per_caller: usize,
    /// Most grpc.health.v1.Health/Watch streams open on a replica…
    pub max_health_watch_streams: usize,
    /// …and from one peer address.
    pub max_health_watch_streams_per_peer: usize,
    /// Most calls whose work runs at once on a replica.
    pub max_calls_in_flight: usize,
    /// Each caller's budgets of reads, writes and stream opens per replica.
    pub rate_limits: crate::grpc::rate_limit::RateLimits,
    /// The largest request metadata accepted, in bytes as HTTP/2 counts them.
    pub max_metadata_bytes: u32,
    /// Most client connections open at once on a replica…
    pub max_connections: usize,
    /// …and from one peer address (an IPv6 one by its /64).
    pub max_connections_per_peer: usize,
    /// How long a new connection has to make its first call.
    pub handshake_timeout_seconds: f64,
    /// How long a connection may stay open with no call.
    pub idle_timeout_seconds: f64,
    /// Browser origins allowed to call the HTTP API and gRPC-web (CORS),
    /// such as `https://app.example.com`; none by default (CORS off).
    pub cors_allowed_origins: Vec<String>,
    /// How often an idle Server-Sent Events stream gets a comment line.
    pub event_stream_keepalive_seconds: f64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen_addr: None,
            metrics_addr: None,
            http2: crate::transport::Transport::default(),
            call_deadline_seconds: None,
            max_watch_streams: crate::app::StreamLimits::WATCH.per_replica,
            max_watch_streams_per_caller: crate::app::StreamLimits::WATCH.per_caller,
            max_health_watch_streams: crate::transport::Transport::default().health_watch_streams,
            max_health_watch_streams_per_peer: crate::transport::Transport::default().health_watch_streams_per_peer,
            max_calls_in_flight: crate::transport::Transport::default().max_calls_in_flight,
            rate_limits: crate::grpc::rate_limit::RateLimits::default(),
            max_metadata_bytes: crate::grpc::metadata_limit::DEFAULT_MAX_METADATA_BYTES,
            max_connections: ConnectionLimits::default().max,
            max_connections_per_peer: ConnectionLimits::default().per_peer,
            handshake_timeout_seconds: ConnectionLimits::default().handshake.as_secs_f64(),
            idle_timeout_seconds: ConnectionLimits::default().idle.as_secs_f64(),
            cors_allowed_origins: Vec::new(),
            event_stream_keepalive_seconds: crate::transport::Transport::default().event_keepalive.as_secs_f64(),
        }
    }
}

/// A number of seconds from the config file (validated finite and in range by `rules`).
fn seconds(value: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(value).unwrap_or(std::time::Duration::from_secs(1))
}

impl ServerSection {
    /// The transport settings: HTTP/2 limits and the call deadline.
    pub fn transport(&self) -> crate::transport::Transport {
        crate::transport::Transport {
            health_watch_streams: self.max_health_watch_streams,
            health_watch_streams_per_peer: self.max_health_watch_streams_per_peer,
            rate_limits: self.rate_limits,
            max_metadata_bytes: self.max_metadata_bytes,
            connections: ConnectionLimits {
                max: self.max_connections,
                per_peer: self.max_connections_per_peer,
                handshake: seconds(self.handshake_timeout_seconds),
                idle: seconds(self.idle_timeout_seconds),
            },
            max_calls_in_flight: self.max_calls_in_flight,
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            event_keepalive: seconds(self.event_stream_keepalive_seconds),
            call_deadline: self.call_deadline_seconds.map_or(
                crate::grpc::deadline::DEFAULT_DEADLINE,
                std::time::Duration::from_secs_f64,
            ),
            ..self.http2.clone()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionManagement {
    pub max_concurrent_sessions_per_junior: u32,
    pub max_concurrent_sessions_per_mentor: u32,
    pub max_concurrent_sessions_system: u32,
    pub max_queue_size: u32,
    pub max_session_duration_hours: f64,
    pub pause_timeout_hours: f64,
    pub queue_timeout_hours: f64,
    pub no_show_grace_minutes: f64,
    pub default_check_in_interval_minutes: f64,
    pub default_escalation_policy: EscalationName,
    pub config_templates: Vec<TemplateEntry>,
    pub mentor_assignment: MentorAssignment,
    pub audit: Audit,
}

impl Default for SessionManagement {
    /// SPEC §4.2-§4.3 and §8. The per-session defaults come from
    /// `SessionConfig::default()`, the one place they are written.
    fn default() -> Self {
        let session = SessionConfig::default();
        SessionManagement {
            max_concurrent_sessions_per_junior: 1,
            max_concurrent_sessions_per_mentor: 3,
            max_concurrent_sessions_system: 50,
            max_queue_size: 100,
            max_session_duration_hours: session.max_duration_secs as f64 / 3600.0,
            pause_timeout_hours: 24.0,
            queue_timeout_hours: 4.0,
            no_show_grace_minutes: 15.0,
            default_check_in_interval_minutes: session.check_in_interval_secs as f64 / 60.0,
            default_escalation_policy: session.escalation_policy.into(),
            config_templates: Vec::new(),
            mentor_assignment: MentorAssignment::default(),
            audit: Audit::default(),
        }
    }
}

/// Escalation policy as written in the file (lower case).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscalationName {
    Progressive,
    Immediate,
    Relaxed,
}

impl From<EscalationPolicy> for EscalationName {
    fn from(e: EscalationPolicy) -> Self {
        match e {
            EscalationPolicy::Progressive => EscalationName::Progressive,
            EscalationPolicy::Immediate => EscalationName::Immediate,
            EscalationPolicy::Relaxed => EscalationName::Relaxed,
        }
    }
}

impl From<EscalationName> for EscalationPolicy {
    fn from(e: EscalationName) -> Self {
        match e {
            EscalationName::Progressive => EscalationPolicy::Progressive,
            EscalationName::Immediate => EscalationPolicy::Immediate,
            EscalationName::Relaxed => EscalationPolicy::Relaxed,
        }
    }
}

/// A template of the file; it replaces a built-in of the same id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateEntry {
    pub id: String,
    pub name: String,
    pub max_duration_hours: f64,
    pub check_in_interval_minutes: f64,
    pub escalation_policy: EscalationName,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MentorAssignment {
    pub strategy: Strategy,
    pub fallback_to_auto: bool,
}

impl Default for MentorAssignment {
    fn default() -> Self {
        MentorAssignment {
            strategy: Strategy::WorkloadBalanced,
            fallback_to_auto: true,
        }
    }
}

/// Mentor auto-assignment strategy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    WorkloadBalanced,
    SkillMatched,
    RoundRobin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    pub log_all_state_changes: bool,
    pub retention_days: u32,
    pub export_format: ExportFormat,
    /// Not in the spec's example: concurrent ExportSessions streams per caller and replica.
    pub max_concurrent_exports_per_caller: u32,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            log_all_state_changes: true,
            retention_days: 365,
            export_format: ExportFormat::Json,
            max_concurrent_exports_per_caller: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BookingSection {
    pub min_duration_minutes: f64,
    pub max_duration_minutes: f64,
    /// How long before its start a booking must be made (CreateBooking,
    /// RescheduleBooking, ListAvailableSlots); 0 means any future start.
    pub min_notice_minutes: u32,
}

impl Default for BookingSection {
    fn default() -> Self {
        BookingSection {
            min_duration_minutes: 15.0,
            max_duration_minutes: 480.0,
            // An hour: time for the mentor to see the request and accept it
            // before it starts (booking products default to one to two hours).
            min_notice_minutes: 60,
        }
    }
}

/// How webhook deliveries are retried (`webhooks:` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// How long a failing delivery is retried before it is FAILED.
    pub retry_period_hours: f64,
    /// The longest one attempt may take.
    pub timeout_seconds: f64,
    /// Where notification intents go (none: not sent).
    pub notification_endpoint_url: Option<String>,
    /// Their signing secret (`whsec_` + base64), with the URL.
    pub notification_signing_secret: Option<Secret>,
    /// Whether subscriptions may target loopback, private, link-local and
    /// metadata addresses (development and tests only; overridden by
    /// `MENTORSHIP_WEBHOOKS_ALLOW_PRIVATE_TARGETS`).
    pub allow_private_targets: bool,
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection {
            retry_period_hours: 24.0,
            timeout_seconds: 10.0,
            notification_endpoint_url: None,
            notification_signing_secret: None,
            allow_private_targets: false,
        }
    }
}

fn span(hours_or_minutes: f64, unit_secs: f64, field: &str) -> anyhow::Result<chrono::Duration> {
    ensure!(
        hours_or_minutes.is_finite() && hours_or_minutes > 0.0,
        "{field} must be a positive number, got {hours_or_minutes}"
    );
    let millis = (hours_or_minutes * unit_secs * 1000.0).round();
    ensure!(millis >= 1000.0, "{field} must be at least one second");
    ensure!(millis < 1e15, "{field} is too large");
    Ok(chrono::Duration::milliseconds(millis as i64))
}

impl ServiceConfig {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<ServiceConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let config: ServiceConfig =
            serde_norway::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        config
            .rules()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// The rules the use cases apply, validated.
    pub fn rules(&self) -> anyhow::Result<Rules> {
        let sm = &self.session_management;
        let hour = 3600.0;
        let minute = 60.0;
        let http2 = &self.server.http2;
        ensure!(
            http2.max_concurrent_streams >= 1,
            "server.http2.max_concurrent_streams must be at least 1"
        );
        ensure!(
            http2.max_local_error_reset_streams >= 1024,
            "server.http2.max_local_error_reset_streams must be at least 1024 (hyper's own default)"
        );
        ensure!(
            self.server
                .call_deadline_seconds
                .is_none_or(|s| (0.001..=3600.0).contains(&s)),
            "server.call_deadline_seconds must be between 0.001 and 3600"
        );
        for (value, field) in [
            (self.server.max_watch_streams, "max_watch_streams"),
            (self.server.max_watch_streams_per_caller, "max_watch_streams_per_caller"),
            (self.server.max_health_watch_streams, "max_health_watch_streams"),
            (
                self.server.max_health_watch_streams_per_peer,
                "max_health_watch_streams_per_peer",
            ),
            (self.server.max_calls_in_flight, "max_calls_in_flight"),
            (self.server.max_connections, "max_connections"),
            (self.server.max_connections_per_peer, "max_connections_per_peer"),
        ] {
            ensure!(
                (1..=1_000_000).contains(&value),
                "server.{field} must be between 1 and 1000000"
            );
        }
        self.server.rate_limits.validate()?;
        for (value, field) in [
            (self.server.handshake_timeout_seconds, "handshake_timeout_seconds"),
            (self.server.idle_timeout_seconds, "idle_timeout_seconds"),
            (
                self.server.event_stream_keepalive_seconds,
                "event_stream_keepalive_seconds",
            ),
        ] {
            ensure!(
                value.is_finite() && (0.1..=86_400.0).contains(&value),
                "server.{field} must be between 0.1 and 86400"
            );
        }
        for origin in &self.server.cors_allowed_origins {
            let parsed = url::Url::parse(origin).ok();
            ensure!(
                parsed.as_ref().is_some_and(|u| matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')),
                "server.cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
            );
        }
        ensure!(
            (1024..=1 << 20).contains(&self.server.max_metadata_bytes),
            "server.max_metadata_bytes must be between 1024 and 1048576"
        );
        ensure!(
            self.server.max_watch_streams_per_caller <= self.server.max_watch_streams,
            "server.max_watch_streams_per_caller must be at most server.max_watch_streams"
        );
        ensure!(
            sm.max_concurrent_sessions_system <= 100_000,
            "session_management.max_concurrent_sessions_system must be at most 100000"
        );
        for (value, field) in [
            (
                sm.max_concurrent_sessions_per_junior,
                "max_concurrent_sessions_per_junior",
            ),
            (
                sm.max_concurrent_sessions_per_mentor,
                "max_concurrent_sessions_per_mentor",
            ),
            (sm.max_concurrent_sessions_system, "max_concurrent_sessions_system"),
        ] {
            ensure!(value > 0, "session_management.{field} must be at least 1");
        }
        ensure!(
            sm.audit.log_all_state_changes,
            "session_management.audit.log_all_state_changes cannot be false: every change is audited"
        );
        ensure!(
            (1..=36_500).contains(&sm.audit.retention_days),
            "session_management.audit.retention_days must be between 1 and 36500"
        );
        ensure!(
            sm.audit.max_concurrent_exports_per_caller > 0,
            "session_management.audit.max_concurrent_exports_per_caller must be at least 1"
        );
        let limits = ConfigLimits::default();
        let default_config = SessionConfig {
            template_id: String::new(),
            max_duration_secs: span(
                sm.max_session_duration_hours,
                hour,
                "session_management.max_session_duration_hours",
            )?
            .num_seconds(),
            check_in_interval_secs: span(
                sm.default_check_in_interval_minutes,
                minute,
                "session_management.default_check_in_interval_minutes",
            )?
            .num_seconds(),
            escalation_policy: sm.default_escalation_policy.into(),
            ..SessionConfig::default()
        };
        default_config
            .validate(&limits, "session_management")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut templates = Template::builtins();
        for (i, t) in sm.config_templates.iter().enumerate() {
            let field = format!("session_management.config_templates[{i}]");
            crate::domain::input::label(&format!("{field}.id"), &t.id).map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(!t.name.trim().is_empty(), "{field}.name must not be empty");
            let config = SessionConfig {
                template_id: t.id.clone(),
                max_duration_secs: span(t.max_duration_hours, hour, &format!("{field}.max_duration_hours"))?
                    .num_seconds(),
                check_in_interval_secs: span(
                    t.check_in_interval_minutes,
                    minute,
                    &format!("{field}.check_in_interval_minutes"),
                )?
                .num_seconds(),
                escalation_policy: t.escalation_policy.into(),
                ..SessionConfig::default()
            };
            config.validate(&limits, &field).map_err(|e| anyhow::anyhow!("{e}"))?;
            let template = Template {
                id: t.id.clone(),
                name: t.name.clone(),
                config,
            };
            match templates.iter_mut().find(|existing| existing.id == t.id) {
                Some(existing) => *existing = template,
                None => templates.push(template),
            }
        }
        let bounds = DurationBounds {
            min: span(
                self.bookings.min_duration_minutes,
                minute,
                "bookings.min_duration_minutes",
            )?,
            max: span(
                self.bookings.max_duration_minutes,
                minute,
                "bookings.max_duration_minutes",
            )?,
        };
        if bounds.min > bounds.max {
            bail!("bookings.min_duration_minutes must not exceed bookings.max_duration_minutes");
        }
        ensure!(
            sm.no_show_grace_minutes.is_finite() && sm.no_show_grace_minutes >= 0.0,
            "session_management.no_show_grace_minutes must not be negative"
        );
        ensure!(
            self.bookings.min_notice_minutes <= 365 * 24 * 60,
            "bookings.min_notice_minutes must be at most a year"
        );
        Ok(Rules {
            booking_bounds: bounds,
            min_notice: chrono::Duration::minutes(i64::from(self.bookings.min_notice_minutes)),
            // The statement timeout (15 s) and a margin for the network.
            silent_connection: std::time::Duration::from_secs(20),
            timeouts: Timeouts {
                no_show_grace: chrono::Duration::milliseconds((sm.no_show_grace_minutes * 60_000.0) as i64),
                pause_timeout: span(sm.pause_timeout_hours, hour, "session_management.pause_timeout_hours")?,
                queue_timeout: span(sm.queue_timeout_hours, hour, "session_management.queue_timeout_hours")?,
            },
            default_mentor_limit: i32::try_from(sm.max_concurrent_sessions_per_mentor)
                .context("max_concurrent_sessions_per_mentor is too large")?,
            assignment: Assignment {
                strategy: match sm.mentor_assignment.strategy {
                    Strategy::WorkloadBalanced => assignment::Strategy::WorkloadBalanced,
                    Strategy::SkillMatched => assignment::Strategy::SkillMatched,
                    Strategy::RoundRobin => assignment::Strategy::RoundRobin,
                },
                fallback_to_auto: sm.mentor_assignment.fallback_to_auto,
            },
            limits: Limits {
                per_mentee: i64::from(sm.max_concurrent_sessions_per_junior),
                system: i64::from(sm.max_concurrent_sessions_system),
                queue: i64::from(sm.max_queue_size),
            },
            default_session_config: default_config,
            config_limits: limits,
            templates,
            idempotency_retention_hours: 48,
            watch_backstop: crate::watch::BACKSTOP,
            watch_buffer: crate::watch::BUFFER,
            watch_streams: crate::app::StreamLimits {
                per_caller: self.server.max_watch_streams_per_caller,
                per_replica: self.server.max_watch_streams,
            },
            history: History {
                retention: chrono::Duration::days(i64::from(sm.audit.retention_days)),
                export_format: match sm.audit.export_format {
                    ExportFormat::Json => query::ExportFormat::JsonLines,
                    ExportFormat::Csv => query::ExportFormat::Csv,
                },
                exports_per_caller: usize::try_from(sm.audit.max_concurrent_exports_per_caller)
                    .context("max_concurrent_exports_per_caller is too large")?,
                purge_batch: 1000,
            },
            webhooks: {
                let timeout = span(self.webhooks.timeout_seconds, 1.0, "webhooks.timeout_seconds")?;
                ensure!(
                    timeout <= chrono::Duration::minutes(1),
                    "webhooks.timeout_seconds must be at most 60"
                );
                let timeout = timeout.to_std().context("webhooks.timeout_seconds")?;
                let notifications = match (
                    &self.webhooks.notification_endpoint_url,
                    &self.webhooks.notification_signing_secret,
                ) {
                    (Some(url), Some(secret)) => {
                        crate::domain::webhook::check_url("webhooks.notification_endpoint_url", url)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        crate::domain::webhook::sign(secret.expose(), "check", 0, b"").map_err(|_| {
                            anyhow::anyhow!("webhooks.notification_signing_secret must be whsec_ and a base64 key")
                        })?;
                        Some((url.clone(), secret.clone()))
                    }
                    (None, None) => None,
                    _ => {
                        bail!("webhooks.notification_endpoint_url and webhooks.notification_signing_secret go together")
                    }
                };
                crate::app::WebhookRules {
                    notifications,
                    retry_period: span(self.webhooks.retry_period_hours, hour, "webhooks.retry_period_hours")?,
                    timeout,
                    // An attempt (connect and response, each within the
                    // timeout) ends well within this.
                    lease: timeout * 2 + std::time::Duration::from_secs(1),
                    targets: crate::app::targets::Targets::allowing_private(self.webhooks.allow_private_targets),
                }
            },
        })
    }
}

/// The rules of an empty config file (`Rules::default()`, here so that the
/// use cases never reach up to the file that configures them). The defaults
/// have one source: the config file's sections (`SessionManagement::default()`
/// and friends); `tests` proves they are valid.
impl Default for Rules {
    fn default() -> Self {
        ServiceConfig::default()
            .rules()
            .expect("the built-in defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::args::Cli;
    use clap::Parser;

    fn parse(yaml: &str) -> anyhow::Result<Rules> {
        let config: ServiceConfig = serde_norway::from_str(yaml)?;
        config.rules()
    }

    #[test]
    fn secrets_never_show_in_the_settings_debug_output() {
        let cli = Cli::try_parse_from([
            "mentorship",
            "--jwt-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
            "--database-url",
            "postgres://app:pa55word@db/mentorship",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pa55word"), "{shown}");
        assert_eq!(
            cli.serve.auth.jwt_secret.expect("set").expose(),
            "s3cret-s3cret-s3cret-s3cret-s3cret"
        );
    }

    #[test]
    fn tls_needs_both_the_certificate_and_its_key_and_a_client_ca_needs_them() {
        for args in [
            &["mentorship", "--tls-cert-file", "cert.pem"][..],
            &["mentorship", "--tls-key-file", "key.pem"],
            &["mentorship", "--tls-client-ca-file", "ca.pem"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let cli =
            Cli::try_parse_from(["mentorship", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"]).expect("parses");
        let missing = cli.serve.tls().expect_err("no such files").to_string();
        assert!(missing.contains("c.pem"), "{missing}");
    }

    #[test]
    fn http2_limits_default_and_are_read() {
        assert_eq!(
            ServiceConfig::default().server.http2,
            crate::transport::Transport::default()
        );
        let config: ServiceConfig =
            serde_norway::from_str("server: {http2: {max_concurrent_streams: 64}}").expect("parses");
        assert_eq!(config.server.http2.max_concurrent_streams, 64);
        assert_eq!(
            config.server.http2.max_local_error_reset_streams,
            crate::transport::Transport::default().max_local_error_reset_streams
        );
        config.rules().expect("valid");
        assert_eq!(
            config.server.transport().call_deadline,
            std::time::Duration::from_secs(30)
        );
        let config: ServiceConfig = serde_norway::from_str("server: {call_deadline_seconds: 2.5}").expect("parses");
        assert_eq!(
            config.server.transport().call_deadline,
            std::time::Duration::from_millis(2500)
        );
    }

    #[test]
    fn the_spec_example_parses() {
        let rules = parse(
            "session_management:
  max_concurrent_sessions_per_junior: 1
  max_concurrent_sessions_per_mentor: 3
  max_concurrent_sessions_system: 50
  max_queue_size: 100
  max_session_duration_hours: 8
  pause_timeout_hours: 24
  queue_timeout_hours: 4
  default_check_in_interval_minutes: 30
  default_escalation_policy: progressive
  config_templates: [ {id: quick-fix, name: Quick Fix, max_duration_hours: 2, check_in_interval_minutes: 15, escalation_policy: immediate}, {id: pairing, name: Pairing, max_duration_hours: 3, check_in_interval_minutes: 20, escalation_policy: relaxed} ]
  mentor_assignment: { strategy: workload_balanced, fallback_to_auto: true }
  audit: { log_all_state_changes: true, retention_days: 365, export_format: json }
",
        )
        .expect("valid");
        assert_eq!(rules.timeouts.pause_timeout, chrono::Duration::hours(24));
        let ids: Vec<&str> = rules.templates.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["quick-fix", "standard", "complex-feature", "pairing"]);
        assert!(parse("").is_ok(), "an empty file means all defaults");
    }

    #[test]
    fn bad_files_are_refused_with_the_field_named() {
        for (yaml, needle) in [
            ("session_management: {max_queue_sise: 3}", "max_queue_sise"),
            ("session_management: {pause_timeout_hours: -1}", "pause_timeout_hours"),
            ("session_management: {max_session_duration_hours: 100}", "max_duration"),
            ("session_management: {default_escalation_policy: loud}", "loud"),
            ("session_management: {mentor_assignment: {strategy: random}}", "random"),
            (
                "session_management: {audit: {log_all_state_changes: false}}",
                "log_all_state_changes",
            ),
            (
                "session_management: {config_templates: [{id: x, name: X, max_duration_hours: 1, check_in_interval_minutes: 1, escalation_policy: relaxed}]}",
                "check_in_interval",
            ),
            (
                "bookings: {min_duration_minutes: 60, max_duration_minutes: 30}",
                "min_duration_minutes",
            ),
            ("server: {http2: {max_concurrent_streams: 0}}", "max_concurrent_streams"),
            (
                "server: {http2: {max_local_error_reset_streams: 10}}",
                "max_local_error_reset_streams",
            ),
            ("server: {http2: {max_streams: 10}}", "max_streams"),
            ("server: {call_deadline_seconds: 0}", "call_deadline_seconds"),
            ("server: {max_watch_streams: 0}", "max_watch_streams"),
            (
                "server: {max_watch_streams_per_caller: 20000}",
                "max_watch_streams_per_caller",
            ),
            ("server: {max_health_watch_streams: 0}", "max_health_watch_streams"),
            ("server: {call_deadline_seconds: 7200}", "call_deadline_seconds"),
        ] {
            let err = format!("{:#}", parse(yaml).expect_err(yaml));
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
