//! The feed of all session events in commit order, `(txid, id)`: its
//! horizon, its pages, the barrier that holds publication until the
//! synchronous standby has what it publishes, and the transaction that
//! holds the horizon back.

use sqlx::PgPool;

use super::{corrupt, sessions::EventRow};
use crate::domain::{
    Error,
    model::{FeedEvent, FeedPosition},
};

/// The feed's current start: the oldest transaction still running (or about
/// to start). Everything before it has finished.
pub(crate) async fn feed_horizon(pool: &PgPool) -> Result<FeedPosition, Error> {
    let xmin = sqlx::query_scalar!(r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS "xmin!""#)
        .fetch_one(pool)
        .await?;
    Ok((xmin, 0))
}

/// A read of the feed of all events.
pub(crate) struct FeedPage {
    /// Every transaction below this id had finished when the page was read.
    pub horizon: i64,
    pub events: Vec<FeedEvent>,
}

/// Up to `limit` events after `after`, in feed order, from finished
/// transactions only (below the horizon of the read's snapshot): every
/// event, each with its session's participants, so one read serves every
/// feed whatever its filter (`ParticipantFilter::admits`).
pub(crate) async fn feed_page(
    db: impl sqlx::PgExecutor<'_>,
    after: FeedPosition,
    limit: i64,
) -> Result<FeedPage, Error> {
    let rows = sqlx::query!(
        r#"SELECT h.horizon AS "horizon!", e.session_id AS "session_id?", e.seq AS "seq?", e.type AS "type?",
                  e.from_status, e.to_status, e.from_stage, e.to_stage, e.actor_kind AS "actor_kind?",
                  e.actor_id AS "actor_id?", e.reason AS "reason?", e.details AS "details?",
                  e.occurred_at AS "occurred_at?", e.txid AS "txid?", e.id AS "id?",
                  e.mentor_id AS "mentor_id?", e.mentee_id AS "mentee_id?", e.listing_id AS "listing_id?"
           FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) h
           LEFT JOIN LATERAL (
               SELECT ev.*, s.mentor_id, s.mentee_id, s.listing_id
               FROM session_events ev JOIN sessions s ON s.id = ev.session_id
               WHERE (ev.txid, ev.id) > ($1, $2) AND ev.txid < h.horizon
               ORDER BY ev.txid, ev.id LIMIT $3
           ) e ON true
           ORDER BY e.txid, e.id"#,
        after.0,
        after.1,
        limit
    )
    .fetch_all(db)
    .await?;
    let horizon = rows.first().map_or(0, |r| r.horizon);
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        // The one row of an empty page carries only the horizon.
        let Some(session_id) = r.session_id else { continue };
        let missing = || corrupt(format!("feed row of session {session_id}"));
        let event = EventRow {
            session_id,
            seq: r.seq.ok_or_else(missing)?,
            r#type: r.r#type.ok_or_else(missing)?,
            from_status: r.from_status,
            to_status: r.to_status,
            from_stage: r.from_stage,
            to_stage: r.to_stage,
            actor_kind: r.actor_kind.ok_or_else(missing)?,
            actor_id: r.actor_id.ok_or_else(missing)?,
            reason: r.reason.ok_or_else(missing)?,
            details: r.details.ok_or_else(missing)?,
            occurred_at: r.occurred_at.ok_or_else(missing)?,
        };
        events.push(FeedEvent {
            event: event.try_into()?,
            position: (r.txid.ok_or_else(missing)?, r.id.ok_or_else(missing)?),
            mentor_id: r.mentor_id.ok_or_else(missing)?,
            mentee_id: r.mentee_id.ok_or_else(missing)?,
            listing_id: r.listing_id.ok_or_else(missing)?,
        });
    }
    Ok(FeedPage { horizon, events })
}

/// Returns once every commit visible now is on the synchronous standby,
/// where synchronous standbys are configured (a no-op otherwise). A commit
/// that answered OK waited for the standby already; but one whose wait was
/// cut short (its backend terminated, as a demotion's fast shutdown does)
/// is visible on the old primary without being on any standby. The write
/// here (to this connection's own row: no two barriers wait on one lock)
/// commits after every commit visible to it, and its own commit waits
/// for the standby, which confirms the WAL in order: so once it returns,
/// what was read before it cannot be lost to a failover.
pub(crate) async fn replicated(db: impl sqlx::PgExecutor<'_>) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO feed_barrier (backend, n)
         SELECT pg_backend_pid(), 1 WHERE current_setting('synchronous_standby_names') <> ''
         ON CONFLICT (backend) DO UPDATE SET n = feed_barrier.n + 1",
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Whether synchronous standbys are configured (`synchronous_standby_names`,
/// which Patroni sets as standbys come and go): without them, no commit
/// waits for a standby and [`replicated`] has nothing to wait for.
pub(crate) async fn synchronous_standbys(db: impl sqlx::PgExecutor<'_>) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT current_setting('synchronous_standby_names') <> ''")
            .fetch_one(db)
            .await?,
    )
}

/// The open transaction with the oldest transaction id in the cluster: the
/// one that holds the feed's horizon back.
pub(crate) struct OldestTransaction {
    pub pid: i32,
    pub application: String,
    pub state: String,
    pub open_for_ms: i64,
}

pub(crate) async fn oldest_transaction(pool: &PgPool) -> Result<Option<OldestTransaction>, Error> {
    Ok(sqlx::query_as!(
        OldestTransaction,
        r#"SELECT pid AS "pid!", coalesce(application_name, '') AS "application!", coalesce(state, '') AS "state!",
                  coalesce((extract(epoch FROM now() - xact_start) * 1000)::bigint, 0) AS "open_for_ms!"
           FROM pg_stat_activity WHERE backend_xid IS NOT NULL
           ORDER BY age(backend_xid) DESC LIMIT 1"#
    )
    .fetch_optional(pool)
    .await?)
}
