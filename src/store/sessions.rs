//! Sessions and their append-only event log.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Tx, corrupt};
use crate::domain::{
    Error,
    access::{Actor, ActorKind, Visibility},
    config::SessionConfig,
    model::{CheckIns, EventType, FeedEvent, Names, Session, SessionEvent},
    query::ListFilter,
};

/// Every column of a session as [`SessionRow`] reads it, with the names a
/// front end shows (scalar subqueries on primary keys, read in the same
/// statement as the row).
macro_rules! session_columns {
    () => {
        "sessions.id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status, stage, config, \
         queued_at, started_at, ended_at, active_banked_us, active_since, paused_at, report, failure, \
         cancel_reason, last_seq, version, created_at, updated_at, check_in_anchor_us, check_ins_missed, \
         escalation_level, notes, metadata, rescheduled_from, rescheduled_to, \
         (SELECT display_name FROM mentees WHERE id = sessions.mentee_id) AS mentee_name, \
         (SELECT display_name FROM mentors WHERE id = sessions.mentor_id) AS mentor_name, \
         (SELECT title FROM listings WHERE id = sessions.listing_id) AS listing_title"
    };
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    booking_id: Uuid,
    listing_id: Uuid,
    mentor_id: Uuid,
    mentee_id: Uuid,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    status: String,
    stage: Option<String>,
    /// Decoded straight from the jsonb bytes (no intermediate JSON value).
    config: sqlx::types::Json<SessionConfig>,
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    active_banked_us: i64,
    active_since: Option<DateTime<Utc>>,
    paused_at: Option<DateTime<Utc>>,
    report: Option<serde_json::Value>,
    failure: Option<serde_json::Value>,
    cancel_reason: String,
    last_seq: i64,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    check_in_anchor_us: i64,
    check_ins_missed: i32,
    escalation_level: i32,
    notes: String,
    metadata: serde_json::Value,
    rescheduled_from: Option<Uuid>,
    rescheduled_to: Option<Uuid>,
    mentee_name: Option<String>,
    mentor_name: Option<String>,
    listing_title: Option<String>,
}

impl TryFrom<SessionRow> for Session {
    type Error = Error;
    fn try_from(r: SessionRow) -> Result<Self, Error> {
        Ok(Session {
            id: r.id,
            booking_id: r.booking_id,
            listing_id: r.listing_id,
            mentor_id: r.mentor_id,
            mentee_id: r.mentee_id,
            start_time: r.start_time,
            end_time: r.end_time,
            status: r.status.parse().map_err(corrupt)?,
            stage: r.stage,
            config: r.config.0,
            queued_at: r.queued_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            active_banked_us: r.active_banked_us,
            active_since: r.active_since,
            paused_at: r.paused_at,
            report: r.report,
            failure: r.failure,
            cancel_reason: r.cancel_reason,
            check_ins: CheckIns {
                anchor_us: r.check_in_anchor_us,
                missed: r.check_ins_missed,
                level: r.escalation_level,
            },
            queue: None,
            notes: r.notes,
            metadata: r.metadata,
            rescheduled_from: r.rescheduled_from,
            rescheduled_to: r.rescheduled_to,
            names: Names {
                mentee: r.mentee_name.unwrap_or_default(),
                mentor: r.mentor_name.unwrap_or_default(),
                listing_title: r.listing_title.unwrap_or_default(),
            },
            last_seq: r.last_seq,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A system deadline: when, and which timeout fires then.
pub(crate) type Deadline = Option<(DateTime<Utc>, &'static str)>;

/// The event a session change appends: everything but the statuses and
/// stages, which are read off the session before and after the change.
#[derive(Debug, Clone)]
pub struct EventInput<'a> {
    pub event_type: EventType,
    pub actor: &'a Actor,
    pub reason: &'a str,
    pub details: serde_json::Value,
}

fn event(s: &Session, before: Option<&Session>, e: EventInput<'_>, seq: i64, at: DateTime<Utc>) -> SessionEvent {
    SessionEvent {
        session_id: s.id,
        seq,
        event_type: e.event_type,
        from_status: before.map(|b| b.status),
        to_status: Some(s.status),
        from_stage: before.and_then(|b| b.stage.clone()),
        to_stage: s.stage.clone(),
        actor: e.actor.clone(),
        reason: e.reason.to_owned(),
        details: e.details,
        occurred_at: at,
    }
}

/// Inserts a new session and its first event (seq 1), in one statement. The
/// composite foreign key ties the session to its ACCEPTED booking. Only the
/// unit of work (`store::unit`) calls this.
pub(super) async fn insert_with_event(
    tx: &mut Tx,
    s: &Session,
    deadline: Deadline,
    check_in_due: Option<DateTime<Utc>>,
    e: EventInput<'_>,
) -> Result<(Session, FeedEvent), Error> {
    let config = serde_json::to_value(&s.config).map_err(|e| Error::Internal(e.into()))?;
    let row = sqlx::query!(
        r#"WITH inserted AS (
               INSERT INTO sessions (id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time,
                                     status, config, queued_at, started_at, active_since, deadline,
                                     deadline_kind, check_in_due, last_seq, rescheduled_from)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $20, 1, $21)
               RETURNING id, status, stage, created_at, updated_at
           ), event AS (
               INSERT INTO session_events (session_id, seq, type, to_status, to_stage, actor_kind, actor_id,
                                           reason, details)
               SELECT id, 1, $15, status, stage, $16, $17, $18, $19 FROM inserted
               RETURNING occurred_at, txid, id
           )
           SELECT inserted.created_at, inserted.updated_at, event.occurred_at, event.txid, event.id
           FROM inserted, event"#,
        s.id,
        s.booking_id,
        s.listing_id,
        s.mentor_id,
        s.mentee_id,
        s.start_time,
        s.end_time,
        s.status.as_str(),
        config,
        s.queued_at,
        s.started_at,
        s.active_since,
        deadline.map(|d| d.0),
        deadline.map(|d| d.1),
        e.event_type.as_str(),
        e.actor.kind.as_str(),
        e.actor.id,
        e.reason,
        e.details,
        check_in_due,
        s.rescheduled_from
    )
    .fetch_one(&mut **tx)
    .await?;
    let created = Session {
        last_seq: 1,
        version: 1,
        created_at: row.created_at,
        updated_at: row.updated_at,
        ..s.clone()
    };
    let event = event(&created, None, e, 1, row.occurred_at);
    let committed = FeedEvent::of(&created, event, (row.txid, row.id));
    Ok((created, committed))
}

/// Writes the lifecycle fields (and the mentor) of a locked session, bumps its version and
/// appends its next event (seq = last_seq + 1), in one statement. `before`
/// is the session as it was locked. Only the unit of work calls this.
pub(super) async fn save_with_event(
    tx: &mut Tx,
    before: &Session,
    s: &Session,
    deadline: Deadline,
    check_in_due: Option<DateTime<Utc>>,
    e: EventInput<'_>,
) -> Result<(Session, FeedEvent), Error> {
    let config = serde_json::to_value(&s.config).map_err(|e| Error::Internal(e.into()))?;
    let row = sqlx::query!(
        r#"WITH saved AS (
               UPDATE sessions SET status = $2, stage = $3, config = $4, queued_at = $5, started_at = $6,
                   ended_at = $7, active_banked_us = $8, active_since = $9, paused_at = $10, report = $11,
                   failure = $12, cancel_reason = $13, deadline = $14, deadline_kind = $15, mentor_id = $23,
                   check_in_anchor_us = $24, check_ins_missed = $25, escalation_level = $26, check_in_due = $27,
                   notes = $28, metadata = $29, rescheduled_to = $30, last_seq = last_seq + 1, version = version + 1, updated_at = now()
               WHERE id = $1
               RETURNING id, status, stage, last_seq, version, updated_at
           ), event AS (
               INSERT INTO session_events (session_id, seq, type, from_status, to_status, from_stage,
                                           to_stage, actor_kind, actor_id, reason, details)
               SELECT id, last_seq, $16, $17, status, $18, stage, $19, $20, $21, $22 FROM saved
               RETURNING occurred_at, txid, id
           )
           SELECT saved.last_seq, saved.version, saved.updated_at, event.occurred_at, event.txid, event.id
           FROM saved, event"#,
        s.id,
        s.status.as_str(),
        s.stage,
        config,
        s.queued_at,
        s.started_at,
        s.ended_at,
        s.active_banked_us,
        s.active_since,
        s.paused_at,
        s.report,
        s.failure,
        s.cancel_reason,
        deadline.map(|d| d.0),
        deadline.map(|d| d.1),
        e.event_type.as_str(),
        before.status.as_str(),
        before.stage,
        e.actor.kind.as_str(),
        e.actor.id,
        e.reason,
        e.details,
        s.mentor_id,
        s.check_ins.anchor_us,
        s.check_ins.missed,
        s.check_ins.level,
        check_in_due,
        s.notes,
        s.metadata,
        s.rescheduled_to
    )
    .fetch_one(&mut **tx)
    .await?;
    let saved = Session {
        queue: None,
        last_seq: row.last_seq,
        version: row.version,
        updated_at: row.updated_at,
        ..s.clone()
    };
    let event = event(&saved, Some(before), e, row.last_seq, row.occurred_at);
    let committed = FeedEvent::of(&saved, event, (row.txid, row.id));
    Ok((saved, committed))
}

pub(crate) async fn get(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<Session>, Error> {
    get_many(db, &[id]).await?.pop().map(|(_, s)| s).transpose()
}

/// Sessions read by id, each row decoded on its own.
pub(crate) type ById = Vec<(Uuid, Result<Session, Error>)>;

/// The sessions of `ids` that exist, in no particular order: one statement
/// for many GetSession calls (`store::coalescer`). Each row is decoded on its
/// own, so a row that cannot be read fails only the calls that asked for it.
pub(crate) async fn get_many(db: impl sqlx::PgExecutor<'_>, ids: &[Uuid]) -> Result<ById, Error> {
    Ok(sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| (row.id, row.try_into()))
    .collect())
}

/// Loads a session and locks it until the transaction ends: every change to a
/// session happens under this lock, which is what keeps `seq` gapless.
pub(crate) async fn lock(tx: &mut Tx, id: Uuid) -> Result<Option<Session>, Error> {
    sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = $1 FOR UPDATE OF sessions"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// [`lock`] a QUEUED session unless another transaction holds it (promotion
/// then moves on to the next one).
pub(crate) async fn lock_queued_unless_busy(tx: &mut Tx, id: Uuid) -> Result<Option<Session>, Error> {
    sqlx::query_as::<_, SessionRow>(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = $1 AND status = 'QUEUED' FOR UPDATE OF sessions SKIP LOCKED"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub(super) session_id: Uuid,
    pub(super) seq: i64,
    #[sqlx(rename = "type")]
    pub(super) r#type: String,
    pub(super) from_status: Option<String>,
    pub(super) to_status: Option<String>,
    pub(super) from_stage: Option<String>,
    pub(super) to_stage: Option<String>,
    pub(super) actor_kind: String,
    pub(super) actor_id: String,
    pub(super) reason: String,
    pub(super) details: serde_json::Value,
    pub(super) occurred_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for SessionEvent {
    type Error = Error;
    fn try_from(r: EventRow) -> Result<Self, Error> {
        let status = |s: Option<String>| s.map(|s| s.parse().map_err(corrupt)).transpose();
        Ok(SessionEvent {
            session_id: r.session_id,
            seq: r.seq,
            event_type: EventType::parse(&r.r#type).ok_or_else(|| corrupt(&r.r#type))?,
            from_status: status(r.from_status)?,
            to_status: status(r.to_status)?,
            from_stage: r.from_stage,
            to_stage: r.to_stage,
            actor: Actor {
                kind: ActorKind::parse(&r.actor_kind).ok_or_else(|| corrupt(&r.actor_kind))?,
                id: r.actor_id,
            },
            reason: r.reason,
            details: r.details,
            occurred_at: r.occurred_at,
        })
    }
}

/// Events of a session after `after_seq`, in seq order.
pub(crate) async fn events(
    db: impl sqlx::PgExecutor<'_>,
    session_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<SessionEvent>, Error> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT session_id, seq, type, from_status, to_status, from_stage, to_stage,
                  actor_kind, actor_id, reason, details, occurred_at
           FROM session_events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"#,
        session_id,
        after_seq,
        limit
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Every event of the given sessions, by session id then seq (an export page).
pub(crate) async fn events_of(db: impl sqlx::PgExecutor<'_>, session_ids: &[Uuid]) -> Result<Vec<SessionEvent>, Error> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT session_id, seq, type, from_status, to_status, from_stage, to_stage,
                  actor_kind, actor_id, reason, details, occurred_at
           FROM session_events WHERE session_id = ANY($1) ORDER BY session_id, seq"#,
        session_ids
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

fn push_filter(q: &mut QueryBuilder<sqlx::Postgres>, filter: &ListFilter, visibility: Visibility) {
    super::push_list_filter(q, "", filter, visibility);
}

/// Keyset page: rows strictly after `after` = (sort value, id) in the requested order.
pub(crate) async fn list(
    db: impl sqlx::PgExecutor<'_>,
    filter: &ListFilter,
    visibility: Visibility,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Session>, Error> {
    let mut q = QueryBuilder::new(concat!("SELECT ", session_columns!(), " FROM sessions WHERE true"));
    push_filter(&mut q, filter, visibility);
    super::push_keyset_order(&mut q, "", filter, after, limit);
    let rows: Vec<SessionRow> = q.build_query_as().fetch_all(db).await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Number of sessions matching the filter (for `include_total_size`).
pub(crate) async fn count(
    db: impl sqlx::PgExecutor<'_>,
    filter: &ListFilter,
    visibility: Visibility,
) -> Result<i64, Error> {
    let mut q = QueryBuilder::new("SELECT count(*) FROM sessions WHERE true");
    push_filter(&mut q, filter, visibility);
    q.build_query_scalar().fetch_one(db).await.map_err(Error::from)
}

/// The pgbench scripts of docs/BENCHMARKS.md ("Write path") stand for the
/// service's own statements; this test keeps them from drifting apart when a
/// column is added.
#[cfg(test)]
mod pgbench_script_tests {
    const SOURCE: &str = include_str!("sessions.rs");
    const PAUSE_RESUME: &str = include_str!("../../scripts/pgbench/pause-resume.sql");
    const GET_SESSION: &str = include_str!("../../scripts/pgbench/get-session.sql");

    /// The SQL of the store function `name`: its raw string literal, or
    /// the pieces of its `concat!`, with `session_columns!()` expanded.
    fn statement(name: &str) -> String {
        let text = &SOURCE[SOURCE.find(&format!("async fn {name}(")).expect("the function")..];
        let body = &text[..text.find("\n}\n").expect("the function's end")];
        if !body.contains("session_columns!()") {
            return between(text, "r#\"", "\"#").to_owned();
        }
        between(body, "concat!(", "))")
            .split(',')
            .map(str::trim)
            .map(|piece| match piece {
                "session_columns!()" => session_columns!().to_owned(),
                quoted => quoted.trim_matches('"').to_owned(),
            })
            .collect()
    }

    /// The text between the first `start` and the next `end` after it.
    fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text.find(start).unwrap_or_else(|| panic!("{start:?} in {text}")) + start.len();
        let len = text[from..]
            .find(end)
            .unwrap_or_else(|| panic!("{end:?} after {start:?} in {text}"));
        &text[from..from + len]
    }

    /// The column each item of a comma-separated list starts with: `a = $1`,
    /// `b AS "b!"`, `c = '{"x": 1, "y": 2}'` and `d` give a, b, c and d.
    fn columns(list: &str) -> Vec<String> {
        let (mut items, mut item, mut quoted, mut depth) = (Vec::new(), String::new(), false, 0);
        for c in list.chars() {
            match c {
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        items
            .iter()
            .map(|item| item.split_whitespace().next().unwrap_or_default().to_owned())
            .collect()
    }

    /// The columns a statement selects, or sets, inserts and returns.
    fn shape(sql: &str) -> Vec<Vec<String>> {
        let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        if !sql.contains("UPDATE sessions SET") {
            return vec![columns(between(&sql, "SELECT", "FROM sessions"))];
        }
        vec![
            columns(between(&sql, "UPDATE sessions SET", " WHERE")),
            columns(between(&sql, "RETURNING", ")")),
            columns(between(&sql, "INSERT INTO session_events (", ")")),
            columns(between(
                between(&sql, "event AS (", "FROM saved, event"),
                "RETURNING",
                ")",
            )),
            columns(between(
                &sql[sql.rfind(") SELECT").expect("the last SELECT")..],
                "SELECT",
                "FROM saved, event",
            )),
        ]
    }

    #[test]
    fn the_pgbench_scripts_run_the_services_statements() {
        let resume = PAUSE_RESUME.find("COMMIT;").expect("two transactions") + "COMMIT;".len();
        for script in [&PAUSE_RESUME[..resume], &PAUSE_RESUME[resume..]] {
            assert_eq!(
                shape(between(script, "BEGIN;", "FOR UPDATE OF sessions;")),
                shape(&statement("lock"))
            );
            assert_eq!(
                shape(between(script, "FOR UPDATE OF sessions;", "COMMIT;")),
                shape(&statement("save_with_event"))
            );
        }
        assert_eq!(shape(GET_SESSION), shape(&statement("get_many")));
    }
}
