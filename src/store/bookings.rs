//! Bookings and their audit log.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Tx, corrupt};
use crate::domain::{
    Error,
    access::{Actor, ActorKind, Visibility},
    booking::{BookingEventKind, BookingStatus},
    model::FeedPosition,
    model::{Booking, BookingEvent, BookingFeedEvent, Names},
    query::ListFilter,
};

/// Every column of a booking as [`BookingRow`] reads it, on table alias
/// `b`: the row, its session, and the names a front end shows (scalar
/// subqueries on primary keys, so they work in `RETURNING` too and a list
/// reads them in its one statement).
macro_rules! booking_columns {
    () => {
        "b.id, b.listing_id, b.mentor_id, b.mentee_id, b.start_time, b.end_time, b.status, b.origin, \
         b.notes, b.reason, b.version, b.created_at, b.updated_at, b.rescheduled_from, b.rescheduled_to, \
         (SELECT s.id FROM sessions s WHERE s.booking_id = b.id) AS session_id, \
         (SELECT display_name FROM mentees WHERE id = b.mentee_id) AS mentee_name, \
         (SELECT display_name FROM mentors WHERE id = b.mentor_id) AS mentor_name, \
         (SELECT title FROM listings WHERE id = b.listing_id) AS listing_title"
    };
}

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
    rescheduled_from: Option<Uuid>,
    rescheduled_to: Option<Uuid>,
    mentee_name: Option<String>,
    mentor_name: Option<String>,
    listing_title: Option<String>,
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
            rescheduled_from: r.rescheduled_from,
            rescheduled_to: r.rescheduled_to,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            names: Names {
                mentee: r.mentee_name.unwrap_or_default(),
                mentor: r.mentor_name.unwrap_or_default(),
                listing_title: r.listing_title.unwrap_or_default(),
            },
        })
    }
}

/// Inserts a new booking (DRAFT, or ACCEPTED for on-demand ones and for
/// the new booking of a reschedule, which the exclusion constraints check).
pub(crate) async fn insert(tx: &mut Tx, b: &Booking) -> Result<Booking, Error> {
    sqlx::query_as::<_, BookingRow>(concat!(
        "INSERT INTO bookings AS b (id, listing_id, mentor_id, mentee_id, start_time, end_time, status, origin, \
                                    notes, rescheduled_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING ",
        booking_columns!()
    ))
    .bind(b.id)
    .bind(b.listing_id)
    .bind(b.mentor_id)
    .bind(b.mentee_id)
    .bind(b.start_time)
    .bind(b.end_time)
    .bind(b.status.as_str())
    .bind(b.origin.as_str())
    .bind(&b.notes)
    .bind(b.rescheduled_from)
    .fetch_one(&mut **tx)
    .await?
    .try_into()
}

pub(crate) async fn get(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<Booking>, Error> {
    sqlx::query_as::<_, BookingRow>(concat!(
        "SELECT ",
        booking_columns!(),
        " FROM bookings b WHERE b.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// The bookings of `ids` that exist, in no particular order, in one statement.
pub(crate) async fn get_many(db: impl sqlx::PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Booking>, Error> {
    sqlx::query_as::<_, BookingRow>(concat!(
        "SELECT ",
        booking_columns!(),
        " FROM bookings b WHERE b.id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(TryInto::try_into)
    .collect()
}

/// Loads a booking and locks it until the transaction ends.
pub(crate) async fn lock(tx: &mut Tx, id: Uuid) -> Result<Option<Booking>, Error> {
    sqlx::query_as::<_, BookingRow>(concat!(
        "SELECT ",
        booking_columns!(),
        " FROM bookings b WHERE b.id = $1 FOR UPDATE OF b"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// Moves a locked booking to `status`. An ACCEPTED REQUESTED booking then
/// holds its slot (a generated column), checked by the exclusion constraints.
pub(crate) async fn set_status(tx: &mut Tx, id: Uuid, status: BookingStatus, reason: &str) -> Result<Booking, Error> {
    sqlx::query_as::<_, BookingRow>(concat!(
        "UPDATE bookings b SET status = $2, reason = $3, version = version + 1, updated_at = now()
         WHERE b.id = $1 RETURNING ",
        booking_columns!()
    ))
    .bind(id)
    .bind(status.as_str())
    .bind(reason)
    .fetch_one(&mut **tx)
    .await?
    .try_into()
}

/// Moves a locked DRAFT to new times.
pub(crate) async fn set_times(
    tx: &mut Tx,
    id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Booking, Error> {
    sqlx::query_as::<_, BookingRow>(concat!(
        "UPDATE bookings b SET start_time = $2, end_time = $3, version = version + 1, updated_at = now()
         WHERE b.id = $1 RETURNING ",
        booking_columns!()
    ))
    .bind(id)
    .bind(start)
    .bind(end)
    .fetch_one(&mut **tx)
    .await?
    .try_into()
}

/// Records that booking `from` was replaced by booking `to`.
pub(crate) async fn set_rescheduled_to(tx: &mut Tx, from: Uuid, to: Uuid) -> Result<(), Error> {
    sqlx::query("UPDATE bookings SET rescheduled_to = $2, version = version + 1, updated_at = now() WHERE id = $1")
        .bind(from)
        .bind(to)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How booking `id` links to the rest, read without its row's other
/// columns: its session, and the booking it asks to replace. None when
/// there is no such booking.
pub(crate) async fn links(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(Option<Uuid>, Option<Uuid>)>, Error> {
    Ok(sqlx::query_as(
        "SELECT (SELECT s.id FROM sessions s WHERE s.booking_id = b.id), b.rescheduled_from
         FROM bookings b WHERE b.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// The pending (DRAFT) request to move booking `id`, if there is one.
pub(crate) async fn pending_reschedule(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<Uuid>, Error> {
    Ok(
        sqlx::query_scalar("SELECT id FROM bookings WHERE rescheduled_from = $1 AND status = 'DRAFT'")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Appends a status change to the booking audit log.
pub(crate) async fn audit(
    tx: &mut Tx,
    booking_id: Uuid,
    from: Option<BookingStatus>,
    to: BookingStatus,
    actor: &Actor,
    reason: &str,
) -> Result<(), Error> {
    let change = Change {
        kind: BookingEventKind::StatusChanged,
        from,
        to,
        details: serde_json::json!({}),
    };
    record(tx, booking_id, change, actor, reason).await
}

/// One entry of a booking's audit log, as it is written.
pub(crate) struct Change {
    pub kind: BookingEventKind,
    pub from: Option<BookingStatus>,
    pub to: BookingStatus,
    pub details: serde_json::Value,
}

/// Appends any kind of entry to the booking audit log.
pub(crate) async fn record(tx: &mut Tx, booking_id: Uuid, c: Change, actor: &Actor, reason: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO booking_events (booking_id, from_status, to_status, actor_kind, actor_id, reason, kind, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(booking_id)
    .bind(c.from.map(BookingStatus::as_str))
    .bind(c.to.as_str())
    .bind(actor.kind.as_str())
    .bind(&actor.id)
    .bind(reason)
    .bind(c.kind.as_str())
    .bind(&c.details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A booking's audit log after `after_seq`, in order. The seq is the
/// entry's rank among the booking's entries (they are few).
pub(crate) async fn events(
    db: impl sqlx::PgExecutor<'_>,
    booking_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<BookingEvent>, Error> {
    sqlx::query_as::<_, EventRow>(
        "SELECT booking_id, seq, from_status, to_status, actor_kind, actor_id, reason, occurred_at, kind, details
         FROM (SELECT row_number() OVER (ORDER BY id) AS seq, * FROM booking_events WHERE booking_id = $1) e
         WHERE seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(booking_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(TryInto::try_into)
    .collect()
}

/// One audit entry as stored.
#[derive(sqlx::FromRow)]
struct EventRow {
    booking_id: Uuid,
    seq: i64,
    from_status: Option<String>,
    to_status: String,
    actor_kind: String,
    actor_id: String,
    reason: String,
    occurred_at: DateTime<Utc>,
    kind: String,
    details: serde_json::Value,
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
            kind: r.kind.parse().map_err(corrupt)?,
            details: r.details,
        })
    }
}

/// The next `limit` committed booking events after `after` in the booking
/// feed, (txid, id) order, with their bookings' participants: like the
/// session feed, only transactions older than every open one (the
/// snapshot's xmin), so nothing can commit behind a position once read.
/// Entries from before the feed existed (no txid) are not in it.
pub(crate) async fn feed_page(
    db: impl sqlx::PgExecutor<'_>,
    after: FeedPosition,
    limit: i64,
) -> Result<Vec<BookingFeedEvent>, Error> {
    #[derive(sqlx::FromRow)]
    struct FeedRow {
        id: i64,
        txid: i64,
        mentor_id: Uuid,
        mentee_id: Uuid,
        listing_id: Uuid,
        #[sqlx(flatten)]
        event: EventRow,
    }
    let rows: Vec<FeedRow> = sqlx::query_as(
        "SELECT e.id, e.txid, e.booking_id, e.from_status, e.to_status, e.actor_kind, e.actor_id,
                e.reason, e.occurred_at, e.kind, e.details, b.mentor_id, b.mentee_id, b.listing_id,
                (SELECT count(*) FROM booking_events x WHERE x.booking_id = e.booking_id AND x.id <= e.id) AS seq
         FROM booking_events e JOIN bookings b ON b.id = e.booking_id
         WHERE (e.txid, e.id) > ($1, $2)
           AND e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
         ORDER BY e.txid, e.id LIMIT $3",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(BookingFeedEvent {
                event: r.event.try_into()?,
                id: r.id,
                position: (r.txid, r.id),
                mentor_id: r.mentor_id,
                mentee_id: r.mentee_id,
                listing_id: r.listing_id,
            })
        })
        .collect()
}

/// Which participant already has an accepted booking overlapping `[start,
/// end)`, leaving out booking `except` (the one a reschedule moves).
pub(crate) async fn overlap(
    db: impl sqlx::PgExecutor<'_>,
    mentor_id: Uuid,
    mentee_id: Uuid,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    except: Option<Uuid>,
) -> Result<Option<&'static str>, Error> {
    let (mentor, mentee): (bool, bool) = sqlx::query_as(
        "SELECT coalesce(bool_or(mentor_id = $1), false), coalesce(bool_or(mentee_id = $2), false)
         FROM (SELECT mentor_id, mentee_id FROM bookings
               WHERE holds_slot AND (mentor_id = $1 OR mentee_id = $2)
                 AND tstzrange(start_time, end_time) && tstzrange($3, $4)
                 AND id IS DISTINCT FROM $5) o",
    )
    .bind(mentor_id)
    .bind(mentee_id)
    .bind(start)
    .bind(end)
    .bind(except)
    .fetch_one(db)
    .await?;
    Ok(if mentor {
        Some("mentor")
    } else if mentee {
        Some("mentee")
    } else {
        None
    })
}

/// The times taken by ACCEPTED bookings of mentor `mentor_id` (and of
/// mentee `mentee_id`, when given) that overlap `[from, to)`: read through
/// the exclusion constraints' GiST indexes.
pub(crate) async fn taken_times(
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
pub(crate) async fn list(
    db: impl sqlx::PgExecutor<'_>,
    filter: &ListFilter,
    visibility: Visibility,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Booking>, Error> {
    let mut q = QueryBuilder::new(concat!("SELECT ", booking_columns!(), " FROM bookings b WHERE true"));
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
pub(crate) async fn lock_participants(tx: &mut Tx, mentor_id: Uuid, mentee_id: Uuid) -> Result<(), Error> {
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
pub(crate) async fn release_slot(tx: &mut Tx, id: Uuid) -> Result<(), Error> {
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
pub(crate) async fn set_mentor(tx: &mut Tx, id: Uuid, mentor_id: Uuid) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE bookings SET mentor_id = $2, version = version + 1, updated_at = now() WHERE id = $1",
        id,
        mentor_id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Locks a booking's meeting in the order every path that changes a meeting
/// takes, so none waits for another in a circle: its session first (a
/// transition, a reassignment), then the booking, and a request to move it
/// last (`close_request`). The caller locks the booking again (a no-op) to
/// check what it may do.
pub(crate) async fn lock_meeting(tx: &mut Tx, booking_id: Uuid) -> Result<(), Error> {
    let Some((session, _)) = links(&mut **tx, booking_id).await? else {
        return Ok(());
    };
    if let Some(session_id) = session {
        super::sessions::lock(tx, session_id).await?;
    }
    lock(tx, booking_id).await?;
    Ok(())
}
