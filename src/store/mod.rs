//! Every SQL statement of the service. One module per aggregate; functions
//! that change state take the caller's transaction so a change and its audit
//! event always commit together.

pub mod bookings;
pub mod directory;
pub mod idempotency;
pub mod sessions;

use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::Error;

/// A transaction on the service's database.
pub type Tx = Transaction<'static, Postgres>;

/// The embedded migrations of `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Maps a database error to the domain: named constraint violations become
/// precise client errors, everything else is internal (and never shows SQL).
pub fn db_error(err: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &err
        && let Some(constraint) = db.constraint()
    {
        match constraint {
            "bookings_mentor_no_overlap" => {
                return Error::precondition(
                    "BOOKING_OVERLAP",
                    "bookings",
                    "the mentor already has an accepted booking overlapping this time",
                )
                .with_metadata("conflict", "mentor");
            }
            "bookings_mentee_no_overlap" => {
                return Error::precondition(
                    "BOOKING_OVERLAP",
                    "bookings",
                    "the mentee already has an accepted booking overlapping this time",
                )
                .with_metadata("conflict", "mentee");
            }
            "sessions_booking_id_key" => {
                return Error::precondition("SESSION_EXISTS", "sessions", "this booking already has a session");
            }
            "mentors_user_id_key" => {
                return Error::precondition(
                    "MENTOR_USER_TAKEN",
                    "mentors",
                    "another mentor profile already belongs to this user",
                );
            }
            _ => {}
        }
    }
    Error::Internal(anyhow::Error::new(err).context("database"))
}

/// Opens a transaction.
pub async fn begin(pool: &PgPool) -> Result<Tx, Error> {
    pool.begin().await.map_err(db_error)
}

/// Commits a transaction.
pub async fn commit(tx: Tx) -> Result<(), Error> {
    tx.commit().await.map_err(db_error)
}

/// Corrupt stored values (an unknown status, say) are internal errors.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("corrupt stored value: {what}"))
}
