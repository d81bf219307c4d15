//! Moving a meeting (SPEC §3, RescheduleBooking): by the mentor or a
//! coordinator at once, by the mentee as a request the mentor accepts, or a
//! DRAFT's times in place. What it keeps true: an ACCEPTED booking is final,
//! so a move is a new booking and session while the old session ends
//! CANCELLED (RESCHEDULED), in one transaction under the participants'
//! locks, old time released first. docs/ARCHITECTURE.md ("Invariants") says
//! how each part is enforced.

use chrono::Utc;
use uuid::Uuid;

use super::App;
use crate::domain::{
    Error, Reason, Result,
    access::{Actor, ActorKind, Principal},
    booking::{self, BookingEventKind, BookingOrigin, BookingStatus},
    clocks,
    command::Reschedule,
    model::{Booking, EventType, Session},
    session::SessionStatus,
};
use crate::store::{
    bookings::{self as store_bookings, Change},
    sessions::{self as store_sessions, EventInput},
    unit::Unit,
};

/// The cancel reason of a session whose meeting moved.
pub(crate) const RESCHEDULED: &str = "RESCHEDULED";

/// What RescheduleBooking did.
pub struct Rescheduled {
    /// The booking that now holds the new time (new, requested or moved).
    pub booking: Booking,
    /// The new SCHEDULED session, when the meeting moved.
    pub session: Option<Session>,
    /// The booking that was asked to move, as it stands now.
    pub rescheduled: Booking,
}

impl App {
    /// RescheduleBooking: see the module's documentation.
    pub async fn reschedule_booking(&self, unit: &mut Unit, who: &Principal, r: Reschedule) -> Result<Rescheduled> {
        booking::check_slot(r.start_time, r.end_time, self.rules.time_rules(), Utc::now())?;
        store_bookings::lock_meeting(unit.tx(), r.booking_id).await?;
        let (current, actor) = super::bookings::lock_for(unit.tx(), who, r.booking_id, "RescheduleBooking").await?;
        if (current.start_time, current.end_time) == (r.start_time, r.end_time) {
            return Err(Error::invalid("start_time", "is the booking's time already"));
        }
        match current.status {
            BookingStatus::Draft => self.move_draft(unit, current, &actor, r).await,
            BookingStatus::Accepted => {
                let session = scheduled_session(unit, &current).await?;
                let times = (r.start_time, r.end_time);
                self.check_new_time(unit, &current, times).await?;
                if actor.kind == ActorKind::Mentee {
                    return self.request_reschedule(unit, current, &actor, r).await;
                }
                store_bookings::lock_participants(unit.tx(), current.mentor_id, current.mentee_id).await?;
                drop_request_for(
                    unit,
                    current.id,
                    &actor,
                    "the booking was moved by its mentor or a coordinator",
                )
                .await?;
                let (new, session) = self
                    .swap(unit, &current, session, Replacement::New(times), &actor, &r.reason)
                    .await?;
                let rescheduled = reread(unit, current.id).await?;
                Ok(Rescheduled {
                    booking: new,
                    session: Some(session),
                    rescheduled,
                })
            }
            other => Err(Error::precondition(
                Reason::BookingNotDraft,
                format!("bookings/{}", current.id),
                format!(
                    "booking is {}; only a DRAFT or an ACCEPTED booking can be rescheduled",
                    other.as_str()
                ),
            )
            .with_metadata("current_status", other.as_str())),
        }
    }

    /// A DRAFT's times change in place, with CreateBooking's checks.
    async fn move_draft(&self, unit: &mut Unit, current: Booking, actor: &Actor, r: Reschedule) -> Result<Rescheduled> {
        if actor.kind == ActorKind::Mentor {
            return Err(Error::denied(
                "a mentor accepts or declines a DRAFT booking; its mentee or a coordinator changes its time",
            ));
        }
        self.check_new_time(unit, &current, (r.start_time, r.end_time)).await?;
        let tx = unit.tx();
        let moved = store_bookings::set_times(tx, current.id, r.start_time, r.end_time).await?;
        let change = Change {
            kind: BookingEventKind::TimeChanged,
            from: Some(BookingStatus::Draft),
            to: BookingStatus::Draft,
            details: serde_json::json!({
                "previous_start_time": current.start_time,
                "previous_end_time": current.end_time,
                "start_time": r.start_time,
                "end_time": r.end_time,
            }),
        };
        store_bookings::record(tx, current.id, change, actor, &r.reason).await?;
        Ok(Rescheduled {
            booking: moved.clone(),
            session: None,
            rescheduled: moved,
        })
    }

    /// The mentee's request: a DRAFT for the new time, linked to the booking.
    async fn request_reschedule(
        &self,
        unit: &mut Unit,
        current: Booking,
        actor: &Actor,
        r: Reschedule,
    ) -> Result<Rescheduled> {
        let tx = unit.tx();
        if let Some(pending) = store_bookings::pending_reschedule(&mut **tx, current.id).await? {
            let expired = store_bookings::get(&mut **tx, pending)
                .await?
                .is_some_and(|p| p.start_time <= Utc::now());
            if !expired {
                return Err(pending_error(current.id, Some(pending)));
            }
            // Its time has passed: it can no longer be accepted, so it no longer blocks.
            close_request(unit, pending, actor, "its start time passed before it was accepted").await?;
        }
        let tx = unit.tx();
        let now = super::now();
        let request = Booking {
            id: Uuid::now_v7(),
            start_time: r.start_time,
            end_time: r.end_time,
            status: BookingStatus::Draft,
            origin: BookingOrigin::Requested,
            reason: String::new(),
            session_id: None,
            rescheduled_from: Some(current.id),
            rescheduled_to: None,
            version: 1,
            created_at: now,
            updated_at: now,
            ..current.clone()
        };
        let created = store_bookings::insert(tx, &request).await.map_err(|e| match e {
            // Two requests at once: the unique index lets one through.
            Error::FailedPrecondition {
                reason: Reason::ReschedulePending,
                ..
            } => pending_error(current.id, None),
            e => e,
        })?;
        let change = Change {
            kind: BookingEventKind::StatusChanged,
            from: None,
            to: BookingStatus::Draft,
            details: serde_json::json!({ "rescheduled_from": current.id }),
        };
        store_bookings::record(tx, created.id, change, actor, &r.reason).await?;
        Ok(Rescheduled {
            booking: created,
            session: None,
            rescheduled: current,
        })
    }

    /// AcceptBooking of a mentee's request: the booking it asks to move
    /// gives way, as when the mentor moves it. The request is locked DRAFT.
    pub(crate) async fn accept_reschedule(
        &self,
        unit: &mut Unit,
        request: &Booking,
        old_id: Uuid,
        actor: &Actor,
    ) -> Result<(Booking, Session)> {
        let old = store_bookings::lock(unit.tx(), old_id)
            .await?
            .ok_or_else(|| Error::not_found(crate::domain::Resource::Booking, old_id))?;
        let session = scheduled_session(unit, &old).await?;
        store_bookings::lock_participants(unit.tx(), request.mentor_id, request.mentee_id).await?;
        self.swap(unit, &old, session, Replacement::Request(request), actor, "")
            .await
    }

    /// Every check of CreateBooking on the new time, except an overlap with
    /// the booking being moved (a DRAFT request's: the one it would replace).
    async fn check_new_time(
        &self,
        unit: &mut Unit,
        current: &Booking,
        times: (chrono::DateTime<Utc>, chrono::DateTime<Utc>),
    ) -> Result<()> {
        let moved = match current.status {
            BookingStatus::Draft => current.rescheduled_from,
            _ => Some(current.id),
        };
        self.check_calendar(unit.tx(), current.mentor_id, current.mentee_id, times, moved)
            .await
    }

    /// The swap, in one transaction: the old session ends CANCELLED
    /// (RESCHEDULED) naming its successor, the old time is released, the
    /// new booking takes the new time (inserted ACCEPTED, or the mentee's
    /// request accepted), and the new SCHEDULED session follows, with the
    /// old one's config, notes and metadata. Both pairs link both ways.
    async fn swap(
        &self,
        unit: &mut Unit,
        old: &Booking,
        old_session: Session,
        replacement: Replacement<'_>,
        actor: &Actor,
        reason: &str,
    ) -> Result<(Booking, Session)> {
        let new_session_id = Uuid::now_v7();
        let mut cancelled = old_session.clone();
        clocks::enter(&mut cancelled, SessionStatus::Cancelled, super::now());
        cancelled.cancel_reason = RESCHEDULED.to_owned();
        cancelled.rescheduled_to = Some(new_session_id);
        let event = EventInput {
            event_type: EventType::StatusChanged,
            actor,
            reason: RESCHEDULED,
            details: serde_json::json!({ "command": "reschedule", "rescheduled_to": new_session_id }),
        };
        unit.save_session(&old_session, &cancelled, event).await?;
        let tx = unit.tx();
        store_bookings::release_slot(tx, old.id).await?;
        let new = match replacement {
            Replacement::New((start_time, end_time)) => {
                let now = super::now();
                let new = Booking {
                    id: Uuid::now_v7(),
                    start_time,
                    end_time,
                    status: BookingStatus::Accepted,
                    origin: BookingOrigin::Requested,
                    reason: String::new(),
                    session_id: None,
                    rescheduled_from: Some(old.id),
                    rescheduled_to: None,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    ..old.clone()
                };
                let inserted = store_bookings::insert(tx, &new).await?;
                let change = Change {
                    kind: BookingEventKind::StatusChanged,
                    from: None,
                    to: BookingStatus::Accepted,
                    details: serde_json::json!({ "rescheduled_from": old.id }),
                };
                store_bookings::record(tx, inserted.id, change, actor, reason).await?;
                inserted
            }
            Replacement::Request(request) => {
                let accepted = store_bookings::set_status(tx, request.id, BookingStatus::Accepted, "").await?;
                store_bookings::audit(
                    tx,
                    request.id,
                    Some(BookingStatus::Draft),
                    BookingStatus::Accepted,
                    actor,
                    "",
                )
                .await?;
                accepted
            }
        };
        store_bookings::set_rescheduled_to(tx, old.id, new.id).await?;
        let change = Change {
            kind: BookingEventKind::Rescheduled,
            from: Some(BookingStatus::Accepted),
            to: BookingStatus::Accepted,
            details: serde_json::json!({
                "rescheduled_to": new.id,
                "start_time": new.start_time,
                "end_time": new.end_time,
                "previous_start_time": old.start_time,
                "previous_end_time": old.end_time,
            }),
        };
        store_bookings::record(tx, old.id, change, actor, reason).await?;
        let carried = super::bookings::Carried {
            id: new_session_id,
            rescheduled_from: Some(old_session.id),
            notes: old_session.notes,
            metadata: old_session.metadata,
        };
        let session = self
            .create_session_for(unit, &new, old_session.config, actor, "booking", carried)
            .await?;
        let mut new = new;
        new.session_id = Some(session.id);
        Ok((new, session))
    }

    /// The session of an ACCEPTED booking, left SCHEDULED, cancels the
    /// pending request to move it: called when the session starts, is
    /// cancelled or times out.
    pub(crate) async fn drop_pending_reschedule(&self, unit: &mut Unit, saved: &Session, actor: &Actor) -> Result<()> {
        let why = match saved.status {
            SessionStatus::Cancelled if saved.cancel_reason == "NO_SHOW" => "the session timed out (NO_SHOW)",
            SessionStatus::Cancelled => "the session was cancelled",
            _ => "the session started",
        };
        drop_request_for(unit, saved.booking_id, actor, why).await
    }
}

/// Cancels the pending request to move booking `booking_id`, if there is
/// one, saying `why` (the meeting started, ended, or changed mentor).
pub(crate) async fn drop_request_for(unit: &mut Unit, booking_id: Uuid, actor: &Actor, why: &str) -> Result<()> {
    match store_bookings::pending_reschedule(&mut **unit.tx(), booking_id).await? {
        Some(pending) => close_request(unit, pending, actor, why).await,
        None => Ok(()),
    }
}

/// What takes the old booking's place.
enum Replacement<'a> {
    /// A new ACCEPTED booking at these times (the mentor's move).
    New((chrono::DateTime<Utc>, chrono::DateTime<Utc>)),
    /// The mentee's request, now accepted.
    Request(&'a Booking),
}

/// The session of an ACCEPTED booking, locked, which must not have started.
async fn scheduled_session(unit: &mut Unit, b: &Booking) -> Result<Session> {
    let not_movable =
        |detail: String| Error::precondition(Reason::InvalidTransition, format!("bookings/{}", b.id), detail);
    if b.origin == BookingOrigin::OnDemand {
        return Err(not_movable(
            "an on-demand session's booking has no time to move".to_owned(),
        ));
    }
    let session_id = b
        .session_id
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("accepted booking {} has no session", b.id)))?;
    let session = store_sessions::lock(unit.tx(), session_id)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("session {session_id} vanished")))?;
    if session.status != SessionStatus::Scheduled {
        return Err(not_movable(format!(
            "its session is {}; only a session that has not started (SCHEDULED) can be rescheduled",
            session.status.as_str()
        ))
        .with_metadata("current_status", session.status.as_str())
        .with_metadata("session_id", session.id.to_string()));
    }
    Ok(session)
}

/// A pending request ends CANCELLED, with the reason it says.
async fn close_request(unit: &mut Unit, id: Uuid, actor: &Actor, why: &str) -> Result<()> {
    let tx = unit.tx();
    if store_bookings::lock(tx, id)
        .await?
        .is_none_or(|b| b.status != BookingStatus::Draft)
    {
        return Ok(());
    }
    store_bookings::set_status(tx, id, BookingStatus::Cancelled, why).await?;
    store_bookings::audit(tx, id, Some(BookingStatus::Draft), BookingStatus::Cancelled, actor, why).await
}

async fn reread(unit: &mut Unit, id: Uuid) -> Result<Booking> {
    store_bookings::get(&mut **unit.tx(), id)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("booking {id} vanished")))
}

/// RESCHEDULE_PENDING, naming the pending request when it is known (a
/// request that won a race is not).
fn pending_error(booking_id: Uuid, pending: Option<Uuid>) -> Error {
    let e = Error::precondition(
        Reason::ReschedulePending,
        format!("bookings/{booking_id}"),
        "this booking already has a pending request to move it; cancel that request first, or wait for the mentor",
    );
    match pending {
        Some(pending) => e.with_metadata("booking_id", pending.to_string()),
        None => e,
    }
}
