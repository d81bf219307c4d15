//! Service settings: command-line flags with environment overrides (clap).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::domain::booking::DurationBounds;

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
}

/// Where the data lives and how the server listens.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// PostgreSQL URL. When unset, a private PostgreSQL is started in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Address to serve gRPC on.
    #[arg(
        long,
        env = "MENTORSHIP_LISTEN_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub listen_addr: SocketAddr,

    /// Directory for the private PostgreSQL and the development key.
    #[arg(long, env = "MENTORSHIP_DATA_DIR", default_value = ".mentorship", global = true)]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub rules: RuleArgs,

    /// Largest database connection pool per replica.
    #[arg(long, env = "MENTORSHIP_DB_MAX_CONNECTIONS", default_value_t = 16, global = true)]
    pub db_max_connections: u32,
}

/// How tokens are verified (SPEC §7).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 shared secret.
    #[arg(long, env = "MENTORSHIP_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file for RS256 or ES256 tokens (instead of a secret).
    #[arg(long, env = "MENTORSHIP_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "MENTORSHIP_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "MENTORSHIP_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
}

/// Booking and session rules that are configurable.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// Shortest booking, in minutes.
    #[arg(long, env = "MENTORSHIP_MIN_BOOKING_MINUTES", default_value_t = 15, global = true)]
    pub min_booking_minutes: i64,

    /// Longest booking, in minutes.
    #[arg(long, env = "MENTORSHIP_MAX_BOOKING_MINUTES", default_value_t = 480, global = true)]
    pub max_booking_minutes: i64,

    /// Minutes after a scheduled session's end_time before it is cancelled as a no-show.
    #[arg(long, env = "MENTORSHIP_NO_SHOW_GRACE_MINUTES", default_value_t = 15, global = true)]
    pub no_show_grace_minutes: i64,

    /// Concurrent sessions per mentor when the mentor profile sets none.
    #[arg(long, env = "MENTORSHIP_MAX_SESSIONS_PER_MENTOR", default_value_t = 3, global = true)]
    pub max_sessions_per_mentor: i32,
}

impl RuleArgs {
    pub fn booking_bounds(&self) -> DurationBounds {
        DurationBounds {
            min: chrono::Duration::minutes(self.min_booking_minutes),
            max: chrono::Duration::minutes(self.max_booking_minutes),
        }
    }

    /// Refuses settings that make no sense, with a message naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.min_booking_minutes > 0 && self.min_booking_minutes <= self.max_booking_minutes,
            "--min-booking-minutes must be positive and at most --max-booking-minutes"
        );
        anyhow::ensure!(
            self.no_show_grace_minutes >= 0,
            "--no-show-grace-minutes must not be negative"
        );
        anyhow::ensure!(
            self.max_sessions_per_mentor > 0,
            "--max-sessions-per-mentor must be positive"
        );
        Ok(())
    }
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
