//! Remembered responses of retried mutations (SPEC §5 `request_id`).

use uuid::Uuid;

use super::Tx;
use crate::domain::Error;

/// What claiming a request id found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// First use: the caller's transaction now owns the id.
    Fresh,
    /// Used before (and committed): its fingerprint and response.
    Seen { fingerprint: Vec<u8>, response: Vec<u8> },
}

/// Claims `request_id` inside the caller's transaction. A concurrent claim of
/// the same id waits here until the first transaction ends: if it committed,
/// this returns `Seen`; if it rolled back, this one becomes the owner.
pub(crate) async fn claim(tx: &mut Tx, request_id: Uuid, fingerprint: &[u8]) -> Result<Claim, Error> {
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (request_id, fingerprint) VALUES ($1, $2)
           ON CONFLICT (request_id) DO NOTHING RETURNING request_id"#,
        request_id,
        fingerprint
    )
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_some() {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query!(
        "SELECT fingerprint, response FROM idempotency_keys WHERE request_id = $1",
        request_id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Claim::Seen {
        fingerprint: row.fingerprint,
        response: row.response,
    })
}

/// Stores the response of a claimed id, in the transaction of the change.
pub(crate) async fn remember(tx: &mut Tx, request_id: Uuid, response: &[u8]) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET response = $2 WHERE request_id = $1",
        request_id,
        response
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets ids older than `hours`; returns how many.
pub(crate) async fn purge(pool: &sqlx::PgPool, hours: i32) -> Result<u64, Error> {
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
        hours
    )
    .execute(pool)
    .await
    .map_err(Error::from)
    .map(|r| r.rows_affected())
}
