//! Capacity (SPEC §4.3): who holds concurrency slots, the system's pool of
//! them, the queue, and the locks that keep every limit exact on any number
//! of replicas.
//!
//! - Per mentor and per mentee, admissions serialize on transaction advisory
//!   locks (mentor first, then mentee) and count the slot holders after
//!   taking them, so two admissions never both take a mentor's last slot.
//! - System-wide, a session takes a row of `system_slots` with
//!   `FOR UPDATE SKIP LOCKED`: concurrent admissions take different rows,
//!   with no hot row and no global lock.
//! - Joining the queue takes one global advisory lock, so its length limit
//!   is exact; only admissions that cannot be admitted take it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Tx;
use crate::domain::Error;

/// Advisory lock namespaces (the first key of `pg_advisory_xact_lock(int, int)`).
const MENTOR_CAPACITY: i32 = 3;
const MENTEE_CAPACITY: i32 = 4;
pub(super) const GLOBAL: i32 = 5;
/// Second keys under [`GLOBAL`] (`store::retention` holds key 2).
const SLOT_POOL: i32 = 0;
const QUEUE: i32 = 1;

/// Makes the pool hold slots 1..=`size`, gives back slots of sessions that
/// no longer hold one, and gives a slot to every session that holds a
/// concurrency slot without one (sessions from before the pool). A slot taken
/// meanwhile by a live admission is never overwritten.
pub(crate) async fn ensure_system_slots(pool: &PgPool, size: i64) -> Result<(), Error> {
    let mut tx = super::begin(pool).await?;
    super::wait_in_turn(&mut tx).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1, $2)", GLOBAL, SLOT_POOL)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO system_slots (slot) SELECT generate_series(1, $1::bigint)::int ON CONFLICT DO NOTHING",
        size
    )
    .execute(&mut *tx)
    .await?;
    // Slots kept by sessions that no longer hold one (a holder from before
    // the pool that ended while another replica started) go back.
    sqlx::query!(
        r#"UPDATE system_slots t SET session_id = NULL FROM sessions s
           WHERE s.id = t.session_id AND s.status NOT IN ('ACTIVE', 'PAUSED')"#
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"WITH holders AS (
               SELECT s.id, row_number() OVER (ORDER BY s.started_at, s.id) AS n FROM sessions s
               WHERE s.status IN ('ACTIVE', 'PAUSED')
                 AND NOT EXISTS (SELECT 1 FROM system_slots t WHERE t.session_id = s.id)
           ), free AS (
               SELECT slot, row_number() OVER (ORDER BY slot) AS n FROM system_slots
               WHERE session_id IS NULL AND slot <= $1
           )
           UPDATE system_slots t SET session_id = holders.id
           FROM holders JOIN free ON free.n = holders.n
           WHERE t.slot = free.slot AND t.session_id IS NULL"#,
        size as i32
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Serializes admissions for this mentor and this mentee until the
/// transaction ends (mentor first, always, so two admissions cannot deadlock).
pub(crate) async fn lock_participants(tx: &mut Tx, mentor_id: Uuid, mentee_id: Uuid) -> Result<(), Error> {
    super::wait_in_turn(tx).await?;
    sqlx::query!(
        r#"SELECT pg_advisory_xact_lock($1, hashtext($3::uuid::text)) AS "mentor!: ()",
                  pg_advisory_xact_lock($2, hashtext($4::uuid::text)) AS "mentee!: ()""#,
        MENTOR_CAPACITY,
        MENTEE_CAPACITY,
        mentor_id,
        mentee_id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(())
}

/// [`lock_participants`] without waiting: false when another transaction
/// holds either lock (a promotion then moves on to the next session).
pub(crate) async fn try_lock_participants(tx: &mut Tx, mentor_id: Uuid, mentee_id: Uuid) -> Result<bool, Error> {
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1, hashtext($3::uuid::text))
                  AND pg_try_advisory_xact_lock($2, hashtext($4::uuid::text)) AS "locked!""#,
        MENTOR_CAPACITY,
        MENTEE_CAPACITY,
        mentor_id,
        mentee_id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(locked)
}

/// Concurrency slots held now by a mentee and by a mentor, and the mentor's
/// own limit (None: the configured default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holding {
    pub mentee: i64,
    pub mentor: i64,
    pub mentor_limit: Option<i32>,
}

pub(crate) async fn holding(tx: &mut Tx, mentor_id: Uuid, mentee_id: Uuid) -> Result<Holding, Error> {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM sessions WHERE mentee_id = $2 AND status IN ('ACTIVE', 'PAUSED')) AS "mentee!",
                  (SELECT count(*) FROM sessions WHERE mentor_id = $1 AND status IN ('ACTIVE', 'PAUSED')) AS "mentor!",
                  (SELECT max_concurrent_sessions FROM mentors WHERE id = $1) AS mentor_limit"#,
        mentor_id,
        mentee_id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Holding {
        mentee: row.mentee,
        mentor: row.mentor,
        mentor_limit: row.mentor_limit,
    })
}

/// Takes a free system concurrency slot for `session_id`, skipping slots
/// other transactions are taking; false when none is free.
pub(crate) async fn claim_system_slot(tx: &mut Tx, session_id: Uuid, size: i64) -> Result<bool, Error> {
    let slot = sqlx::query_scalar!(
        r#"UPDATE system_slots SET session_id = $1
           WHERE slot = (SELECT slot FROM system_slots WHERE session_id IS NULL AND slot <= $2
                         ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING slot"#,
        session_id,
        size as i32
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(slot.is_some())
}

/// Gives back the system concurrency slot of a session leaving ACTIVE/PAUSED.
pub(crate) async fn release_system_slot(tx: &mut Tx, session_id: Uuid) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE system_slots SET session_id = NULL WHERE session_id = $1",
        session_id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the queue's lock until the transaction ends and counts the queue.
pub(crate) async fn lock_queue(tx: &mut Tx) -> Result<i64, Error> {
    super::wait_in_turn(tx).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1, $2)", GLOBAL, QUEUE)
        .execute(&mut **tx)
        .await?;
    let queued = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM sessions WHERE status = 'QUEUED'"#)
        .fetch_one(&mut **tx)
        .await?;
    Ok(queued)
}

/// Takes the queue's lock shared until the transaction ends: releases hold
/// it so that a session joining the queue (which takes it exclusively)
/// decides after they commit, and they see a session that joined before.
pub(crate) async fn lock_queue_shared(tx: &mut Tx) -> Result<(), Error> {
    super::wait_in_turn(tx).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock_shared($1, $2)", GLOBAL, QUEUE)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A queued session, as promotion sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queued {
    pub id: Uuid,
    pub mentor_id: Uuid,
    pub mentee_id: Uuid,
}

/// The first `limit` queued sessions, oldest first.
pub(crate) async fn queue_head(tx: &mut Tx, limit: i64) -> Result<Vec<Queued>, Error> {
    let rows = sqlx::query_as!(
        Queued,
        r#"SELECT id, mentor_id, mentee_id FROM sessions WHERE status = 'QUEUED'
           ORDER BY queued_at, id LIMIT $1"#,
        limit
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}

/// What a queued session's position and wait are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueView {
    pub holding: Holding,
    pub system_free: bool,
    /// Queued sessions ahead of it: of its mentor, of its mentee, in all.
    pub ahead_mentor: i64,
    pub ahead_mentee: i64,
    pub ahead_all: i64,
}

/// A queued session, as [`queue_views`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InQueue {
    pub session_id: Uuid,
    pub mentor_id: Uuid,
    pub mentee_id: Uuid,
    pub queued_at: DateTime<Utc>,
}

/// What each of `queued` stands on, by session, and the typical active time
/// ([`typical_active_time`]): one statement for a whole page.
pub(crate) async fn queue_views(
    db: impl sqlx::PgExecutor<'_>,
    queued: &[InQueue],
    size: i64,
) -> Result<(std::collections::HashMap<Uuid, QueueView>, Option<chrono::Duration>), Error> {
    if queued.is_empty() {
        return Ok((Default::default(), None));
    }
    let column = |f: fn(&InQueue) -> Uuid| queued.iter().map(f).collect::<Vec<_>>();
    let at: Vec<DateTime<Utc>> = queued.iter().map(|q| q.queued_at).collect();
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        mentee: i64,
        mentor: i64,
        mentor_limit: Option<i32>,
        system_free: bool,
        ahead_mentor: i64,
        ahead_mentee: i64,
        ahead_all: i64,
        typical_us: Option<i64>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        r#"SELECT q.id,
                  (SELECT count(*) FROM sessions WHERE mentee_id = q.mentee_id AND status IN ('ACTIVE', 'PAUSED')) AS mentee,
                  (SELECT count(*) FROM sessions WHERE mentor_id = q.mentor_id AND status IN ('ACTIVE', 'PAUSED')) AS mentor,
                  (SELECT max_concurrent_sessions FROM mentors WHERE id = q.mentor_id) AS mentor_limit,
                  EXISTS (SELECT 1 FROM system_slots WHERE session_id IS NULL AND slot <= $5) AS system_free,
                  (SELECT count(*) FROM sessions WHERE status = 'QUEUED' AND mentor_id = q.mentor_id
                     AND (queued_at, id) < (q.queued_at, q.id)) AS ahead_mentor,
                  (SELECT count(*) FROM sessions WHERE status = 'QUEUED' AND mentee_id = q.mentee_id
                     AND (queued_at, id) < (q.queued_at, q.id)) AS ahead_mentee,
                  (SELECT count(*) FROM sessions WHERE status = 'QUEUED'
                     AND (queued_at, id) < (q.queued_at, q.id)) AS ahead_all,
                  (SELECT avg(active_banked_us)::bigint FROM (
                       SELECT active_banked_us FROM sessions
                       WHERE ended_at > now() - interval '7 days' AND started_at IS NOT NULL
                       ORDER BY ended_at DESC LIMIT 200) recent) AS typical_us
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[]) AS q(id, mentor_id, mentee_id, queued_at)"#,
    )
    .bind(column(|q| q.session_id))
    .bind(column(|q| q.mentor_id))
    .bind(column(|q| q.mentee_id))
    .bind(at)
    .bind(size as i32)
    .fetch_all(db)
    .await?;
    let typical = rows
        .first()
        .and_then(|r| r.typical_us)
        .map(chrono::Duration::microseconds);
    let views = rows
        .into_iter()
        .map(|r| {
            let holding = Holding {
                mentee: r.mentee,
                mentor: r.mentor,
                mentor_limit: r.mentor_limit,
            };
            let view = QueueView {
                holding,
                system_free: r.system_free,
                ahead_mentor: r.ahead_mentor,
                ahead_mentee: r.ahead_mentee,
                ahead_all: r.ahead_all,
            };
            (r.id, view)
        })
        .collect();
    Ok((views, typical))
}

/// The mean ACTIVE time of up to the 200 sessions that ended most recently
/// (within 7 days) after running; None when there are none.
pub(crate) async fn typical_active_time(db: impl sqlx::PgExecutor<'_>) -> Result<Option<chrono::Duration>, Error> {
    let us = sqlx::query_scalar!(
        r#"SELECT avg(active_banked_us)::bigint FROM (
               SELECT active_banked_us FROM sessions
               WHERE ended_at > now() - interval '7 days' AND started_at IS NOT NULL
               ORDER BY ended_at DESC LIMIT 200) recent"#
    )
    .fetch_one(db)
    .await?;
    Ok(us.map(chrono::Duration::microseconds))
}

/// The queue and the pool at a glance (GetQueueStatus).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QueueStatus {
    pub queued: i64,
    pub holding: i64,
    /// Seconds; None when no session queued in the last 24 hours has started.
    pub p95_wait_secs: Option<f64>,
}

pub(crate) async fn queue_status(db: impl sqlx::PgExecutor<'_>) -> Result<QueueStatus, Error> {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM sessions WHERE status = 'QUEUED') AS "queued!",
                  (SELECT count(*) FROM system_slots WHERE session_id IS NOT NULL) AS "holding!",
                  (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - queued_at))
                     FROM sessions WHERE queued_at > now() - interval '24 hours'
                      AND started_at >= queued_at) AS p95"#
    )
    .fetch_one(db)
    .await?;
    Ok(QueueStatus {
        queued: row.queued,
        holding: row.holding,
        p95_wait_secs: row.p95,
    })
}
