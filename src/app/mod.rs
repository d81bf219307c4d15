//! Use cases: authorize → load → decide (domain) → persist (store).
//! Nothing here knows about tonic; handlers call these with parsed values.

pub mod bookings;
pub mod directory;
pub mod page;
pub mod sessions;

use sqlx::PgPool;

use crate::domain::{booking::DurationBounds, config::SessionConfig, session::Timeouts};

/// The configurable rules the use cases apply.
#[derive(Debug, Clone)]
pub struct Rules {
    pub booking_bounds: DurationBounds,
    pub timeouts: Timeouts,
    /// Concurrent sessions of a mentor whose profile sets no limit.
    pub default_mentor_limit: i32,
    /// Config of sessions created by accepting a booking.
    pub default_session_config: SessionConfig,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            booking_bounds: DurationBounds::default(),
            timeouts: Timeouts::default(),
            default_mentor_limit: 3,
            default_session_config: SessionConfig::default(),
        }
    }
}

/// The service's use cases over one database.
#[derive(Debug, Clone)]
pub struct App {
    pub pool: PgPool,
    pub rules: Rules,
}

impl App {
    pub fn new(pool: PgPool, rules: Rules) -> Self {
        App { pool, rules }
    }
}
