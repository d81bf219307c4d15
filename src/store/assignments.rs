//! Mentor assignment: the candidates of automatic assignment and the
//! append-only assignment history.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Tx, corrupt};
use crate::domain::{
    Error,
    access::{Actor, ActorKind},
    assignment::Candidate,
    model::MentorAssignment,
};

/// Mentors who accept sessions, have `skill_area` and are not in an
/// ACCEPTED booking at `at`, with their workload and their zone (the caller
/// checks their windows).
pub(crate) async fn candidates(
    tx: &mut Tx,
    skill_area: &str,
    default_limit: i32,
    at: DateTime<Utc>,
) -> Result<Vec<(Candidate, String)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT m.id, array_position(m.skill_areas, $1) AS "rank!",
                  coalesce(m.max_concurrent_sessions, $2) AS "limit!", m.last_assigned_at, m.timezone,
                  (SELECT count(*) FROM sessions s
                    WHERE s.mentor_id = m.id AND s.status IN ('ACTIVE', 'PAUSED')) AS "holding!"
           FROM mentors m WHERE m.accepting_sessions AND m.skill_areas @> ARRAY[$1]
             AND NOT EXISTS (SELECT 1 FROM bookings b
                             WHERE b.holds_slot AND b.mentor_id = m.id
                               AND tstzrange(b.start_time, b.end_time) @> $3::timestamptz)"#,
        skill_area,
        default_limit,
        at
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let candidate = Candidate {
                mentor_id: r.id,
                skill_rank: r.rank,
                holding: r.holding,
                limit: i64::from(r.limit),
                last_assigned_at: r.last_assigned_at,
            };
            (candidate, r.timezone)
        })
        .collect())
}

/// What an assignment records.
#[derive(Debug, Clone)]
pub(crate) struct NewAssignment<'a> {
    pub session_id: Uuid,
    pub mentor_id: Uuid,
    pub previous_mentor_id: Option<Uuid>,
    pub strategy: &'a str,
    pub reason: &'a str,
    pub actor: &'a Actor,
}

/// Appends to the assignment history and stamps the mentor's last assignment
/// (the tie-break of the strategies).
pub(crate) async fn record(tx: &mut Tx, a: NewAssignment<'_>) -> Result<(), Error> {
    sqlx::query!(
        r#"WITH stamped AS (UPDATE mentors SET last_assigned_at = now() WHERE id = $2)
           INSERT INTO mentor_assignments (session_id, mentor_id, previous_mentor_id, strategy, reason,
                                           actor_kind, actor_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        a.session_id,
        a.mentor_id,
        a.previous_mentor_id,
        a.strategy,
        a.reason,
        a.actor.kind.as_str(),
        a.actor.id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

struct AssignmentRow {
    id: i64,
    session_id: Uuid,
    mentor_id: Uuid,
    previous_mentor_id: Option<Uuid>,
    strategy: String,
    reason: String,
    actor_kind: String,
    actor_id: String,
    assigned_at: DateTime<Utc>,
}

/// A session's assignments after `after_id`, oldest first.
pub(crate) async fn list(
    db: impl sqlx::PgExecutor<'_>,
    session_id: Uuid,
    after_id: i64,
    limit: i64,
) -> Result<Vec<MentorAssignment>, Error> {
    let rows = sqlx::query_as!(
        AssignmentRow,
        r#"SELECT id, session_id, mentor_id, previous_mentor_id, strategy, reason, actor_kind, actor_id, assigned_at
           FROM mentor_assignments WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"#,
        session_id,
        after_id,
        limit
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(MentorAssignment {
                id: r.id,
                session_id: r.session_id,
                mentor_id: r.mentor_id,
                previous_mentor_id: r.previous_mentor_id,
                strategy: r.strategy,
                reason: r.reason,
                actor: Actor {
                    kind: ActorKind::parse(&r.actor_kind).ok_or_else(|| corrupt(&r.actor_kind))?,
                    id: r.actor_id,
                },
                assigned_at: r.assigned_at,
            })
        })
        .collect()
}
