//! The sweeper's statements: the next armed deadline or check-in, and the
//! due sessions, each locked so that one replica fires it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Tx;
use crate::domain::Error;

/// The earliest armed deadline or check-in, read from their partial
/// indexes, leaving out the sessions in `skip` (ones whose timeout keeps
/// failing, backing off).
pub(crate) async fn next_deadline(pool: &PgPool, skip: &[Uuid]) -> Result<Option<DateTime<Utc>>, Error> {
    sqlx::query_scalar!(
        "SELECT least((SELECT min(deadline) FROM sessions WHERE deadline IS NOT NULL AND id <> ALL($1)),
                      (SELECT min(check_in_due) FROM sessions WHERE check_in_due IS NOT NULL AND id <> ALL($1)))",
        skip
    )
    .fetch_one(pool)
    .await
    .map_err(Error::from)
}

/// Locks one session whose check-in is due, as [`lock_due`] does.
pub(crate) async fn lock_due_check_in(tx: &mut Tx, skip: &[Uuid]) -> Result<Option<Uuid>, Error> {
    sqlx::query_scalar!(
        r#"SELECT id FROM sessions
           WHERE check_in_due IS NOT NULL AND check_in_due <= now() AND id <> ALL($1)
           ORDER BY check_in_due LIMIT 1 FOR UPDATE SKIP LOCKED"#,
        skip
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(Error::from)
}

/// Corrects a session's stored check-in due time (a session a replica of
/// an older release moved without keeping it).
pub(crate) async fn set_check_in_due(tx: &mut Tx, id: Uuid, due: Option<DateTime<Utc>>) -> Result<(), Error> {
    sqlx::query!("UPDATE sessions SET check_in_due = $2 WHERE id = $1", id, due)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks one session whose deadline has passed, skipping sessions another
/// replica's sweeper holds (each timeout fires on exactly one replica) and
/// the ids in `skip` (ones that failed this pass).
pub(crate) async fn lock_due(tx: &mut Tx, skip: &[Uuid]) -> Result<Option<(Uuid, String)>, Error> {
    let row = sqlx::query!(
        r#"SELECT id, deadline_kind AS "kind!" FROM sessions
           WHERE deadline IS NOT NULL AND deadline <= now() AND id <> ALL($1)
           ORDER BY deadline LIMIT 1 FOR UPDATE SKIP LOCKED"#,
        skip
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| (r.id, r.kind)))
}
