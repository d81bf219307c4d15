//! The command line (clap), each flag with its environment override.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::secret::Secret;

/// The `mentorship` command line.
#[derive(Debug, Parser)]
#[command(
    name = "mentorship",
    version,
    about = "gRPC service for mentorship bookings and sessions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Mint a development token signed with the configured (or development) HS256 secret.
    Token(TokenArgs),
    /// Purge history older than audit.retention_days now (the replicas also do it hourly).
    Purge(PurgeArgs),
}

/// `mentorship purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Report what would be purged, and purge nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where the data lives and how the server listens.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// PostgreSQL URL. When unset, a private PostgreSQL is started in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<Secret>,

    /// Address to serve gRPC on [default: the config file's server.listen_addr, else 127.0.0.1:50051].
    #[arg(long, env = "MENTORSHIP_LISTEN_ADDR", global = true)]
    pub listen_addr: Option<SocketAddr>,

    /// Directory for the private PostgreSQL and the development key.
    #[arg(long, env = "MENTORSHIP_DATA_DIR", default_value = ".mentorship", global = true)]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// YAML service config file (see the README's Configuration section).
    #[arg(long = "config", env = "MENTORSHIP_CONFIG", global = true)]
    pub config_file: Option<PathBuf>,

    /// Address to serve Prometheus metrics on, at /metrics [default: the
    /// config file's server.metrics_addr, else not served].
    #[arg(long, env = "MENTORSHIP_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,

    /// PEM certificate chain the server presents; with --tls-key-file the
    /// server speaks TLS only.
    #[arg(long, env = "MENTORSHIP_TLS_CERT_FILE", global = true, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "MENTORSHIP_TLS_KEY_FILE", global = true, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates for mutual TLS: every client must present a
    /// certificate that chains to one of them.
    #[arg(
        long,
        env = "MENTORSHIP_TLS_CLIENT_CA_FILE",
        global = true,
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Log lines as text (for people) or json (one object per line, for
    /// collectors).
    #[arg(
        long,
        env = "MENTORSHIP_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,

    /// Largest database connection pool per replica.
    #[arg(long, env = "MENTORSHIP_DB_MAX_CONNECTIONS", default_value_t = 16, global = true)]
    pub db_max_connections: u32,

    /// PostgreSQL `statement_timeout` of the service's connections, in ms.
    #[arg(
        long,
        env = "MENTORSHIP_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 15_000,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub db_statement_timeout_ms: u64,

    /// PostgreSQL `lock_timeout` of the service's connections, in ms: a call
    /// waiting longer for a row lock fails with ABORTED / LOCK_TIMEOUT.
    #[arg(
        long,
        env = "MENTORSHIP_DB_LOCK_TIMEOUT_MS",
        default_value_t = 1_000,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub db_lock_timeout_ms: u64,

    /// PostgreSQL `idle_in_transaction_session_timeout` of the service's
    /// connections, in ms.
    #[arg(
        long,
        env = "MENTORSHIP_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub db_idle_in_transaction_timeout_ms: u64,

    /// Whether webhook subscriptions may target loopback, private,
    /// link-local and cloud metadata addresses: for development and tests
    /// only [default: the config file's webhooks.allow_private_targets,
    /// else false].
    #[arg(long, env = "MENTORSHIP_WEBHOOKS_ALLOW_PRIVATE_TARGETS", global = true)]
    pub webhooks_allow_private_targets: Option<bool>,
}

/// How log lines are written (`MENTORSHIP_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    /// The TLS files, read, when configured.
    pub fn tls(&self) -> anyhow::Result<Option<crate::grpc::tls::Tls>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(crate::grpc::tls::Tls::load(
                cert,
                key,
                self.tls_client_ca_file.as_deref(),
            )?)),
            _ => Ok(None),
        }
    }

    /// The timeouts of the service's database connections.
    pub fn db_timeouts(&self) -> crate::store::pool::DbTimeouts {
        use std::time::Duration;
        crate::store::pool::DbTimeouts {
            statement: Duration::from_millis(self.db_statement_timeout_ms),
            lock: Duration::from_millis(self.db_lock_timeout_ms),
            idle_in_transaction: Duration::from_millis(self.db_idle_in_transaction_timeout_ms),
        }
    }
}

/// How tokens are verified (SPEC §7).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 shared secret.
    #[arg(long, env = "MENTORSHIP_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key file for RS256 or ES256 tokens (instead of a secret).
    #[arg(long, env = "MENTORSHIP_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "MENTORSHIP_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "MENTORSHIP_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Longest token lifetime accepted, in seconds (from `iat` to `exp`),
    /// when set.
    #[arg(
        long,
        env = "MENTORSHIP_JWT_MAX_LIFETIME_SECONDS",
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=31_536_000)
    )]
    pub jwt_max_lifetime_seconds: Option<u64>,
}

/// `mentorship token`: mint a development token.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Roles to grant (repeatable): mentee, mentor, coordinator, service.
    #[arg(long = "role", required = true)]
    pub roles: Vec<String>,
    /// The caller's user id (`sub`); random when omitted.
    #[arg(long)]
    pub sub: Option<uuid::Uuid>,
    /// The mentor profile id, for the mentor role.
    #[arg(long)]
    pub mentor_id: Option<uuid::Uuid>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: i64,
}
