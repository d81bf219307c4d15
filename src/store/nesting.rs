//! Stored values nested deeper than every standard client decodes safely:
//! written before Structs were limited (`domain::input::MAX_NESTING`), found
//! once by the migration that brought the limit (`too_deep_values`), and
//! reported to operators at every start until they are dealt with.

use sqlx::PgPool;

use crate::domain::Error;

/// One value found too deep.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TooDeep {
    pub table_name: String,
    /// A session's id, or an event's `session_id/seq`.
    pub row_key: String,
    pub column_name: String,
    pub nesting: i32,
}

/// Deepest stored nesting that a request under the limit can produce: the
/// 16 levels a request may send and the three this service wraps around
/// them in a config change event (the migration looks for values past it).
pub const STORED_MAX_NESTING: i32 = crate::domain::input::MAX_NESTING as i32 + 3;

/// Looks for too deep values now (what the migration did once, on upgrade):
/// records the ones not yet recorded and returns how many.
pub async fn find(pool: &PgPool) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT find_too_deep_values($1)")
        .bind(STORED_MAX_NESTING)
        .fetch_one(pool)
        .await?)
}

/// The values recorded as too deep (at most `limit` of them, in a stable
/// order), and how many there are in all.
pub async fn recorded(pool: &PgPool, limit: i64) -> Result<(Vec<TooDeep>, i64), Error> {
    let listed = sqlx::query_as(
        "SELECT table_name, row_key, column_name, nesting FROM too_deep_values \
         ORDER BY table_name, row_key, column_name LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM too_deep_values")
        .fetch_one(pool)
        .await?;
    Ok((listed, total))
}

/// Warns, at start, about every value recorded as too deep (the first 20
/// by name, the rest counted).
pub async fn warn_at_start(pool: &PgPool) -> Result<(), Error> {
    let (listed, total) = recorded(pool, 20).await?;
    if total == 0 {
        return Ok(());
    }
    let rows: Vec<String> = listed
        .iter()
        .map(|v| {
            format!(
                "{}.{} of {} ({} levels)",
                v.table_name, v.column_name, v.row_key, v.nesting
            )
        })
        .collect();
    tracing::warn!(
        total,
        first = %rows.join(", "),
        "stored values nest deeper than standard protobuf clients decode (Python's stops at 100 message levels): \
         reads of these rows may fail in those clients; see docs/OPERATIONS.md, \"Values nested too deep\", \
         and delete their rows from too_deep_values once dealt with"
    );
    Ok(())
}
