//! Every SQL statement of the service. One module per aggregate; functions
//! that change state take the caller's transaction so a change and its audit
//! event always commit together.

pub(crate) mod assignments;
pub(crate) mod bookings;
pub(crate) mod capacity;
pub(crate) mod census;
pub mod coalescer;
pub(crate) mod deadlines;
pub mod deliveries;
pub(crate) mod directory;
pub(crate) mod feed;
pub(crate) mod idempotency;
pub(crate) mod keepalive;
pub mod nesting;
pub(crate) mod pool;
pub mod retention;
pub mod seed;
pub(crate) mod sessions;
pub(crate) mod unit;
pub(crate) mod waits;
pub(crate) mod webhooks;

use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    Error,
    access::Visibility,
    error::Reason,
    query::{ListFilter, ParticipantFilter, SortField},
};

/// A transaction on the service's database.
pub type Tx = Transaction<'static, Postgres>;

pub use pool::MIGRATOR;

/// Maps a database error to the domain, so `?` works on every query: named
/// constraint violations become precise client errors, everything else is
/// internal (and never shows SQL).
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Error {
        let kind = error_kind(&err);
        crate::metrics::database_error(kind);
        if let sqlx::Error::Database(db) = &err
            && let Some(mapped) = db.constraint().and_then(constraint_error)
        {
            return mapped;
        }
        match kind {
            "lock_timeout" => Error::Aborted {
                reason: Reason::LockTimeout,
                message: "a row this call needs is locked by another transaction; retry with backoff".into(),
            },
            // Nothing changed: the transaction was rolled back to break a
            // cycle of waits. Retrying is safe, as after a lock timeout.
            "deadlock" | "serialization_failure" => Error::Aborted {
                reason: Reason::LockTimeout,
                message: "this call conflicted with a concurrent one and was rolled back; retry with backoff".into(),
            },
            "unavailable" | "pool_timeout" => unavailable(&err),
            _ => Error::Internal(anyhow::Error::new(err).context("database")),
        }
    }
}

/// What kind of database error this is: the `kind` label of
/// `mentorship_db_errors_total`, and what the mapping above goes by.
fn error_kind(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            _ if db.constraint().is_some() => "constraint",
            // lock_not_available: `lock_timeout` ran out.
            Some("55P03") => "lock_timeout",
            // query_canceled: `statement_timeout` ran out (or a cancel).
            Some("57014") => "statement_timeout",
            Some("40001") => "serialization_failure",
            // read_only_sql_transaction: the connection reached a standby
            // (refused as it opens, but a node may be demoted under it).
            Some("25006") => "unavailable",
            Some("40P01") => "deadlock",
            // The server is going away (admin_shutdown, crash_shutdown,
            // cannot_connect_now) or the connection broke (class 08).
            // 25P03 / 57P05: the server closed an idle-in-transaction or
            // idle session (a FATAL since PostgreSQL 14).
            Some(code) if matches!(code, "57P01" | "57P02" | "57P03" | "57P05" | "25P03") || code.starts_with("08") => {
                "unavailable"
            }
            _ => "other",
        },
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => "unavailable",
        _ => "other",
    }
}

/// The database cannot be reached now: retryable, and logged (the client
/// learns only that).
fn unavailable(err: &sqlx::Error) -> Error {
    tracing::warn!(error = %err, "database unavailable");
    Error::Unavailable("the database cannot be reached; retry with backoff".into())
}

/// The client error for a violation of a named constraint, where there is one.
fn constraint_error(constraint: &str) -> Option<Error> {
    Some(match constraint {
        "bookings_mentor_no_overlap" => Error::precondition(
            Reason::BookingOverlap,
            "bookings",
            "the mentor already has an accepted booking overlapping this time",
        )
        .with_metadata("conflict", "mentor"),
        "bookings_mentee_no_overlap" => Error::precondition(
            Reason::BookingOverlap,
            "bookings",
            "the mentee already has an accepted booking overlapping this time",
        )
        .with_metadata("conflict", "mentee"),
        "sessions_booking_id_key" => {
            Error::precondition(Reason::SessionExists, "sessions", "this booking already has a session")
        }
        "bookings_one_pending_reschedule" => Error::precondition(
            Reason::ReschedulePending,
            "bookings",
            "this booking already has a pending request to move it",
        ),
        "mentors_user_id_key" => Error::precondition(
            Reason::MentorUserTaken,
            "mentors",
            "another mentor profile already belongs to this user",
        ),
        _ => return None,
    })
}

/// Opens a transaction, in a task of its own so that it is never dropped
/// half-way. A future dropped while its `BEGIN` is in flight would hand
/// the connection back to the pool inside an open transaction that sqlx
/// does not know of (an open sqlx bug in 0.9.0): the next borrower's
/// statements would run in it, keep its locks and its snapshot, and fail
/// with 25P02 after one error. Run to the end in a task, a `BEGIN` yields
/// a [`Tx`] that rolls back on drop like any other; if the caller is gone
/// by then, the task drops it.
pub async fn begin(pool: &PgPool) -> Result<Tx, Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("opening a transaction")))?
        .map_err(Error::from)
}

/// The lock timeout of the waits that serialize work on purpose (the
/// advisory locks of admission, bookings and the queue): a burst on one
/// mentor waits its turn instead of failing at the connection's short
/// `lock_timeout`, which is meant for rows someone holds for long.
pub const SERIALIZING_LOCK_TIMEOUT: &str = "10s";

/// Gives the rest of the transaction [`SERIALIZING_LOCK_TIMEOUT`].
pub async fn wait_in_turn(tx: &mut Tx) -> Result<(), Error> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(SERIALIZING_LOCK_TIMEOUT)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Commits a transaction.
pub async fn commit(tx: Tx) -> Result<(), Error> {
    match tx.commit().await {
        Ok(()) => Ok(()),
        // The COMMIT was sent, or may have been, and no answer came: the
        // server may have committed. Only a retry with the request_id can
        // tell the caller which.
        Err(err) if error_kind(&err) == "unavailable" => {
            crate::metrics::database_error("commit_outcome_unknown");
            tracing::warn!(error = %err, "the connection failed during COMMIT: outcome unknown");
            Err(Error::CommitOutcomeUnknown)
        }
        Err(err) => Err(err.into()),
    }
}

/// Runs `work` (database work of a background job, or of a stream between
/// its items) for at most `limit`: past it, the work waits on a connection
/// that will not answer (a hung backend, a cut network), and is dropped,
/// its connection checked as it goes back to the pool and closed
/// (`pool::check_releases_for_a_while`), so the job goes on with new
/// connections. UNAVAILABLE then. `waits` hears of the silence, and
/// sees the work under way unless `Span::Long` (work of many transactions,
/// which may rightly run long: it notes each of them itself).
pub async fn bounded<T>(
    waits: &waits::Waits,
    span: Span,
    limit: std::time::Duration,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    // Pinned here, so that it is dropped only at the end, after the pool
    // has heard that work is dropped.
    let mut work = std::pin::pin!(work);
    let waiting = (span == Span::Short).then(|| waits.begin());
    let done = tokio::time::timeout(limit, work.as_mut()).await;
    drop(waiting);
    match done {
        Ok(done) => done,
        Err(_) => {
            pool::check_releases_for_a_while();
            waits.silence();
            crate::metrics::database_error("silent_connection");
            Err(Error::Unavailable(format!(
                "the database did not answer within {} ms",
                limit.as_millis()
            )))
        }
    }
}

/// How much work [`bounded`] runs: a few statements, or many transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Short,
    Long,
}

/// Corrupt stored values (an unknown status, say) are internal errors.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("corrupt stored value: {what}"))
}

/// Appends the conditions of a list's filter (participants, visibility, the
/// start-time range) on the columns of table alias `t`.
pub(crate) fn push_list_filter(
    q: &mut QueryBuilder<Postgres>,
    t: &'static str,
    filter: &ListFilter,
    visibility: Visibility,
) {
    push_participant_filter(q, t, &filter.participants, visibility);
    if let Some(from) = filter.start_from {
        q.push(format!(" AND {t}start_time >= ")).push_bind(from);
    }
    if let Some(to) = filter.start_to {
        q.push(format!(" AND {t}start_time < ")).push_bind(to);
    }
}

/// Appends a keyset page's condition (rows strictly after `after` = (sort
/// value, id) in the filter's order), its ORDER BY and its LIMIT, on the
/// columns of table alias `t`.
pub(crate) fn push_keyset_order(
    q: &mut QueryBuilder<Postgres>,
    t: &'static str,
    filter: &ListFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) {
    let column = match filter.sort {
        SortField::CreatedAt => "created_at",
        SortField::StartTime => "start_time",
    };
    let (cmp, dir) = if filter.descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some((value, id)) = after {
        q.push(format!(" AND ({t}{column}, {t}id) {cmp} ("))
            .push_bind(value)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(format!(" ORDER BY {t}{column} {dir}, {t}id {dir} LIMIT "))
        .push_bind(limit);
}

/// Appends `AND …` conditions for `filter` and `visibility` on the columns of
/// table alias `t` (a constant such as "b." or "", never input).
pub(crate) fn push_participant_filter(
    q: &mut QueryBuilder<Postgres>,
    t: &'static str,
    filter: &ParticipantFilter,
    visibility: Visibility,
) {
    if let Visibility::Own { mentee_id, mentor_id } = visibility {
        q.push(format!(" AND ({t}mentee_id = "))
            .push_bind(mentee_id)
            .push(format!(" OR {t}mentor_id = "))
            .push_bind(mentor_id)
            .push(")");
    }
    if let Some(id) = filter.mentor_id {
        q.push(format!(" AND {t}mentor_id = ")).push_bind(id);
    }
    if let Some(id) = filter.mentee_id {
        q.push(format!(" AND {t}mentee_id = ")).push_bind(id);
    }
    if let Some(id) = filter.listing_id {
        q.push(format!(" AND {t}listing_id = ")).push_bind(id);
    }
    match filter.statuses.as_slice() {
        [] => {}
        // An equality, so a status index also gives the order of the page.
        [one] => {
            q.push(format!(" AND {t}status = ")).push_bind(*one);
        }
        many => {
            let statuses: Vec<String> = many.iter().map(|s| s.to_string()).collect();
            q.push(format!(" AND {t}status = ANY(")).push_bind(statuses).push(")");
        }
    }
}
