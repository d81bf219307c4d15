//! The census behind the metrics of sessions by status and of the queue
//! (`jobs::census`).

use std::{collections::HashMap, time::Duration};

use sqlx::PgPool;

use crate::domain::{Error, session::SessionStatus};
use crate::metrics::Census;

/// Recounts the census when the last count is at least `every` old and no
/// other replica is counting right now (the row is locked with SKIP LOCKED,
/// so the others pass by instead of waiting). Returns whether this call counted.
pub(crate) async fn recount(pool: &PgPool, every: Duration) -> Result<bool, Error> {
    let mut tx = super::begin(pool).await?;
    let due = sqlx::query_scalar!(
        "SELECT counted_at FROM census
          WHERE counted_at IS NULL OR counted_at <= now() - make_interval(secs => $1)
            FOR UPDATE SKIP LOCKED",
        every.as_secs_f64()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if due.is_none() {
        return Ok(false);
    }
    // Both counts read an index only (sessions_status_created_idx,
    // sessions_queue_idx).
    sqlx::query!(
        r#"UPDATE census SET
               counted_at = now(),
               sessions = (SELECT coalesce(jsonb_object_agg(status, n), '{}')
                             FROM (SELECT status, count(*) AS n FROM sessions GROUP BY status) counts),
               queued = q.queued,
               oldest_queued_at = q.oldest
             FROM (SELECT count(*) AS queued, min(queued_at) AS oldest
                     FROM sessions WHERE status = 'QUEUED') q"#
    )
    .execute(&mut *tx)
    .await?;
    super::commit(tx).await?;
    Ok(true)
}

/// The census as last counted (every status, zero where none; nothing
/// before the first count).
pub(crate) async fn read(pool: &PgPool) -> Result<Census, Error> {
    let row = sqlx::query!(
        r#"SELECT counted_at, sessions AS "sessions: sqlx::types::Json<HashMap<String, i64>>",
                  queued, oldest_queued_at
             FROM census"#
    )
    .fetch_one(pool)
    .await?;
    let counts = row.sessions.0;
    // Never counted yet (another replica may be counting right now): no
    // figures rather than zeros.
    let sessions = match row.counted_at {
        Some(_) => SessionStatus::ALL
            .into_iter()
            .map(|s| (s, counts.get(s.as_str()).copied().unwrap_or(0)))
            .collect(),
        None => Vec::new(),
    };
    Ok(Census {
        counted_at: row.counted_at,
        sessions,
        queued: row.queued,
        oldest_queued_at: row.oldest_queued_at,
    })
}
