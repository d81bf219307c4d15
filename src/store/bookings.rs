//! Bookings and their audit log.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Tx, corrupt};
use crate::domain::{
    Error,
    access::{Actor, ActorKind, Visibility},
    booking::BookingStatus,
    model::{Booking, BookingEvent, BookingFeedEvent},
    query::{FeedPosition, ListFilter},
};

#[derive(sqlx::FromRow)]
struct BookingRow {
    id: Uuid,
    listing_id: Uuid,
    mentor_id: Uuid,
    mentee_id: Uuid,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    status: String,
    origin: String,
    notes: String,
    reason: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    session_id: Option<Uuid>,
}

impl TryFrom<BookingRow> for Booking {
    type Error = Error;
    fn try_from(r: BookingRow) -> Result<Self, Error> {
        Ok(Booking {
            id: r.id,
            listing_id: r.listing_id,
            mentor_id: r.mentor_id,
            mentee_id: r.mentee_id,
            start_time: r.start_time,
            end_time: r.end_time,
            status: r.status.parse().map_err(corrupt)?,
            origin: r.origin.parse().map_err(corrupt)?,
            notes: r.notes,
            reason: r.reason,
            session_id: r.session_id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Inserts a new booking (DRAFT, or ACCEPTED for on-demand ones).
pub async fn insert(tx: &mut Tx, b: &Booking) -> Result<Booking, Error> {
    sqlx::query_as!(
        BookingRow,
        r#"INSERT INTO bookings (id, listing_id, mentor_id, mentee_id, start_time, end_time,
                                 status, origin, notes)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           RETURNING id, listing_id, mentor_id, mentee_id, start_time, end_time, status, origin,
                     notes, reason, version, created_at, updated_at, NULL::uuid AS session_id"#,
        b.id,
        b.listing_id,
        b.mentor_id,
        b.mentee_id,
        b.start_time,
        b.end_time,
        b.status.as_str(),
        b.origin.as_str(),
        b.notes
    )
    .fetch_one(&mut **tx)
    .await?
    .try_into()
}

pub async fn get(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<Booking>, Error> {
    sqlx::query_as!(
        BookingRow,
        r#"SELECT b.id, b.listing_id, b.mentor_id, b.mentee_id, b.start_time, b.end_time, b.status,
                  b.origin, b.notes, b.reason, b.version, b.created_at, b.updated_at,
                  s.id AS "session_id?"
           FROM bookings b LEFT JOIN sessions s ON s.booking_id = b.id
           WHERE b.id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// Loads a booking and locks it until the transaction ends.
pub async fn lock(tx: &mut Tx, id: Uuid) -> Result<Option<Booking>, Error> {
    sqlx::query_as!(
        BookingRow,
        r#"SELECT b.id, b.listing_id, b.mentor_id, b.mentee_id, b.start_time, b.end_time, b.status,
                  b.origin, b.notes, b.reason, b.version, b.created_at, b.updated_at,
                  (SELECT s.id FROM sessions s WHERE s.booking_id = b.id) AS "session_id?"
           FROM bookings b WHERE b.id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// Moves a locked booking to `status`. An ACCEPTED REQUESTED booking then
/// holds its slot (a generated column), checked by the exclusion constraints.
pub async fn set_status(tx: &mut Tx, id: Uuid, status: BookingStatus, reason: &str) -> Result<Booking, Error> {
    sqlx::query_as!(
        BookingRow,
        r#"UPDATE bookings SET status = $2, reason = $3, version = version + 1, updated_at = now()
           WHERE id = $1
           RETURNING id, listing_id, mentor_id, mentee_id, start_time, end_time, status, origin,
                     notes, reason, version, created_at, updated_at, NULL::uuid AS session_id"#,
        id,
        status.as_str(),
        reason
    )
    .fetch_one(&mut **tx)
    .await?
    .try_into()
}

/// Appends to the booking audit log.
pub async fn audit(
    tx: &mut Tx,
    booking_id: Uuid,
    from: Option<BookingStatus>,
    to: BookingStatus,
    actor: &Actor,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query!(
        r#"INSERT INTO booking_events (booking_id, from_status, to_status, actor_kind, actor_id, reason)
           VALUES ($1, $2, $3, $4, $5, $6)"#,
        booking_id,
        from.map(BookingStatus::as_str),
        to.as_str(),
        actor.kind.as_str(),
        actor.id,
        reason
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A booking's audit log after `after_seq`, in order. The seq is the
/// entry's rank among the booking's entries (they are few).
pub async fn events(
    db: impl sqlx::PgExecutor<'_>,
    booking_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<BookingEvent>, Error> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT booking_id, seq AS "seq!", from_status, to_status, actor_kind, actor_id, reason, occurred_at
           FROM (SELECT row_number() OVER (ORDER BY id) AS seq, * FROM booking_events WHERE booking_id = $1) e
           WHERE seq > $2 ORDER BY seq LIMIT $3"#,
        booking_id,
        after_seq,
        limit
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(TryInto::try_into)
    .collect()
}

/// One audit entry as stored.
struct EventRow {
    booking_id: Uuid,
    seq: i64,
    from_status: Option<String>,
    to_status: String,
    actor_kind: String,
    actor_id: String,
    reason: String,
    occurred_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for BookingEvent {
    type Error = Error;
    fn try_from(r: EventRow) -> Result<BookingEvent, Error> {
        Ok(BookingEvent {
            booking_id: r.booking_id,
            seq: r.seq,
            from_status: r.from_status.map(|s| s.parse().map_err(corrupt)).transpose()?,
            to_status: r.to_status.parse().map_err(corrupt)?,
            actor: Actor {
                kind: ActorKind::parse(&r.actor_kind).ok_or_else(|| corrupt(&r.actor_kind))?,
                id: r.actor_id,
            },
            reason: r.reason,
            occurred_at: r.occurred_at,
        })
    }
}

/// The next `limit` committed booking events after `after` in the booking
/// feed, (txid, id) order, with their bookings' participants: like the
/// session feed, only transactions older than every open one (the
/// snapshot's xmin), so nothing can commit behind a position once read.
/// Entries from before the feed existed (no txid) are not in it.
pub async fn feed_page(
    db: impl sqlx::PgExecutor<'_>,
    after: FeedPosition,
    limit: i64,
) -> Result<Vec<BookingFeedEvent>, Error> {
    let rows = sqlx::query!(
        r#"SELECT e.id, e.txid AS "txid!", e.booking_id, e.from_status, e.to_status, e.actor_kind, e.actor_id,
                  e.reason, e.occurred_at, b.mentor_id, b.mentee_id, b.listing_id,
                  (SELECT count(*) FROM booking_events x WHERE x.booking_id = e.booking_id AND x.id <= e.id)
                      AS "seq!"
           FROM booking_events e JOIN bookings b ON b.id = e.booking_id
           WHERE (e.txid, e.id) > ($1, $2)
             AND e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
           ORDER BY e.txid, e.id LIMIT $3"#,
        after.0,
        after.1,
        limit
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(BookingFeedEvent {
                event: EventRow {
                    booking_id: r.booking_id,
                    seq: r.seq,
                    from_status: r.from_status,
                    to_status: r.to_status,
                    actor_kind: r.actor_kind,
                    actor_id: r.actor_id,
                    reason: r.reason,
                    occurred_at: r.occurred_at,
                }
                .try_into()?,
                id: r.id,
                position: (r.txid, r.id),
                mentor_id: r.mentor_id,
                mentee_id: r.mentee_id,
                listing_id: r.listing_id,
            })
        })
        .collect()
}

/// Which participant already has an accepted booking overlapping `[start, end)`.
pub async fn overlap(
    db: impl sqlx::PgExecutor<'_>,
    mentor_id: Uuid,
    mentee_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<&'static str>, Error> {
    let row = sqlx::query!(
        r#"SELECT coalesce(bool_or(mentor_id = $1), false) AS "mentor!",
                  coalesce(bool_or(mentee_id = $2), false) AS "mentee!"
           FROM (SELECT mentor_id, mentee_id FROM bookings
                 WHERE holds_slot AND (mentor_id = $1 OR mentee_id = $2)
                   AND tstzrange(start_time, end_time) && tstzrange($3, $4)) o"#,
        mentor_id,
        mentee_id,
        start,
        end
    )
    .fetch_one(db)
    .await?;
    Ok(if row.mentor {
        Some("mentor")
    } else if row.mentee {
        Some("mentee")
    } else {
        None
    })
}

/// The times taken by ACCEPTED bookings of mentor `mentor_id` (and of
/// mentee `mentee_id`, when given) that overlap `[from, to)`: read through
/// the exclusion constraints' GiST indexes.
pub async fn taken_times(
    db: impl sqlx::PgExecutor<'_>,
    mentor_id: Uuid,
    mentee_id: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, Error> {
    Ok(sqlx::query_as(
        "SELECT start_time, end_time FROM bookings
         WHERE holds_slot AND (mentor_id = $1 OR mentee_id = $2)
           AND tstzrange(start_time, end_time) && tstzrange($3, $4)",
    )
    .bind(mentor_id)
    .bind(mentee_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?)
}

/// Keyset page in the filter's order.
pub async fn list(
    db: impl sqlx::PgExecutor<'_>,
    filter: &ListFilter,
    visibility: Visibility,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Booking>, Error> {
    let mut q = QueryBuilder::new(
        "SELECT b.id, b.listing_id, b.mentor_id, b.mentee_id, b.start_time, b.end_time, b.status, \
         b.origin, b.notes, b.reason, b.version, b.created_at, b.updated_at, s.id AS session_id \
         FROM bookings b LEFT JOIN sessions s ON s.booking_id = b.id WHERE true",
    );
    super::push_list_filter(&mut q, "b.", filter, visibility);
    super::push_keyset_order(&mut q, "b.", filter, after, limit);
    let rows: Vec<BookingRow> = q.build_query_as().fetch_all(db).await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Serializes slot-taking transactions per mentor and per mentee (advisory
/// locks, always mentor first). Without this, two transactions inserting
/// overlapping rows into the exclusion constraint's index can each wait for
/// the other and deadlock; with it, the second waits and then gets a clean
/// `BOOKING_OVERLAP` from the constraint.
pub async fn lock_participants(tx: &mut Tx, mentor_id: Uuid, mentee_id: Uuid) -> Result<(), Error> {
    super::wait_in_turn(tx).await?;
    sqlx::query!(
        r#"SELECT pg_advisory_xact_lock(1, hashtext($1::uuid::text)) AS "mentor!: ()",
                  pg_advisory_xact_lock(2, hashtext($2::uuid::text)) AS "mentee!: ()""#,
        mentor_id,
        mentee_id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(())
}

/// Frees the time slot of a booking whose session was cancelled.
pub async fn release_slot(tx: &mut Tx, id: Uuid) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE bookings SET slot_released_at = now(), updated_at = now() WHERE id = $1 AND slot_released_at IS NULL",
        id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves a booking to another mentor (its session was reassigned while
/// SCHEDULED); the exclusion constraint checks the new mentor's time.
pub async fn set_mentor(tx: &mut Tx, id: Uuid, mentor_id: Uuid) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE bookings SET mentor_id = $2, version = version + 1, updated_at = now() WHERE id = $1",
        id,
        mentor_id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
