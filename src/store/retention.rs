//! Retention (SPEC §4.4): terminal sessions that ended before a cutoff go,
//! with their events, assignment rows, booking and booking events; so do
//! bookings that never got a session (DECLINED, CANCELLED) last changed
//! before the cutoff. Nothing else is ever touched: the predicates below are
//! the only way rows leave, and a non-terminal session has no `ended_at`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::capacity::GLOBAL;
use crate::domain::Error;

/// Second key of the purge's transaction advisory lock under [`GLOBAL`].
const RETENTION: i32 = 2;

/// What a purge removed, or would remove.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub sessions: i64,
    pub session_events: i64,
    pub assignments: i64,
    pub bookings: i64,
    pub booking_events: i64,
}

impl std::ops::AddAssign for Purged {
    fn add_assign(&mut self, o: Purged) {
        self.sessions += o.sessions;
        self.session_events += o.session_events;
        self.assignments += o.assignments;
        self.bookings += o.bookings;
        self.booking_events += o.booking_events;
    }
}

impl std::fmt::Display for Purged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sessions, {} session events, {} assignment rows, {} bookings, {} booking events",
            self.sessions, self.session_events, self.assignments, self.bookings, self.booking_events
        )
    }
}

/// One batch, in its own transaction: up to `limit` expired sessions (their
/// rows locked, skipping any another transaction holds) and up to `limit`
/// expired sessionless bookings. `None` when another replica's batch holds
/// the purge lock (a transaction lock: it ends with the batch, however the
/// batch ends, so no replica can keep it by failing).
pub async fn purge_batch(pool: &PgPool, cutoff: DateTime<Utc>, limit: i64) -> Result<Option<Purged>, Error> {
    let mut tx = super::begin(pool).await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1, $2) AS "locked!""#,
        GLOBAL,
        RETENTION
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    let doomed = sqlx::query!(
        r#"SELECT id, booking_id FROM sessions
           WHERE ended_at < $1 AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
           ORDER BY ended_at LIMIT $2 FOR UPDATE SKIP LOCKED"#,
        cutoff,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let sessions: Vec<Uuid> = doomed.iter().map(|r| r.id).collect();
    let mut bookings: Vec<Uuid> = doomed.iter().map(|r| r.booking_id).collect();
    bookings.extend(
        sqlx::query_scalar!(
            r#"SELECT id FROM bookings
               WHERE updated_at < $1 AND status IN ('DECLINED', 'CANCELLED')
               ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED"#,
            cutoff,
            limit
        )
        .fetch_all(&mut *tx)
        .await?,
    );
    let session_events = sqlx::query!("DELETE FROM session_events WHERE session_id = ANY($1)", &sessions)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let assignments = sqlx::query!("DELETE FROM mentor_assignments WHERE session_id = ANY($1)", &sessions)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let sessions = sqlx::query!("DELETE FROM sessions WHERE id = ANY($1)", &sessions)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let booking_events = sqlx::query!("DELETE FROM booking_events WHERE booking_id = ANY($1)", &bookings)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let bookings = sqlx::query!("DELETE FROM bookings WHERE id = ANY($1)", &bookings)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let purged = Purged {
        sessions: count(sessions),
        session_events: count(session_events),
        assignments: count(assignments),
        bookings: count(bookings),
        booking_events: count(booking_events),
    };
    tx.commit().await?;
    Ok(Some(purged))
}

/// What a purge with this cutoff would remove now (`mentorship purge --dry-run`).
pub async fn plan(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<Purged, Error> {
    let row = sqlx::query!(
        r#"WITH doomed AS (
               SELECT id, booking_id FROM sessions
               WHERE ended_at < $1 AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
           ), lone AS (
               SELECT id FROM bookings WHERE updated_at < $1 AND status IN ('DECLINED', 'CANCELLED')
           ), gone_bookings AS (
               SELECT booking_id AS id FROM doomed UNION ALL SELECT id FROM lone
           )
           SELECT (SELECT count(*) FROM doomed) AS "sessions!",
                  (SELECT count(*) FROM session_events WHERE session_id IN (SELECT id FROM doomed)) AS "session_events!",
                  (SELECT count(*) FROM mentor_assignments WHERE session_id IN (SELECT id FROM doomed)) AS "assignments!",
                  (SELECT count(*) FROM gone_bookings) AS "bookings!",
                  (SELECT count(*) FROM booking_events WHERE booking_id IN (SELECT id FROM gone_bookings)) AS "booking_events!""#,
        cutoff
    )
    .fetch_one(pool)
    .await?;
    Ok(Purged {
        sessions: row.sessions,
        session_events: row.session_events,
        assignments: row.assignments,
        bookings: row.bookings,
        booking_events: row.booking_events,
    })
}
