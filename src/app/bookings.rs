//! Booking use cases (SPEC §3).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{App, page};
use crate::domain::{
    Error, Result,
    access::{Actor, Principal, Role},
    availability,
    booking::{self, BookingOrigin, BookingStatus},
    clocks,
    command::{CloseBooking, NewBooking},
    model::{Booking, BookingEvent, EventType, Session},
    openings,
    query::{BookingQuery, CalendarOf, LogQuery, SlotQuery},
    session::SessionStatus,
};
use crate::domain::{Reason, Resource};
use crate::store::unit::Unit;
use crate::store::{
    self, Tx,
    assignments::{self as store_assignments, NewAssignment},
    bookings as store_bookings, directory,
    sessions::EventInput,
};

impl App {
    pub async fn create_booking(&self, unit: &mut Unit, who: &Principal, req: NewBooking) -> Result<Booking> {
        let actor = who.actor_for("CreateBooking")?;
        let mentee_id = match (req.mentee_id, who.has(Role::Coordinator)) {
            (Some(id), true) => id,
            (None, true) if !who.has(Role::Mentee) => {
                return Err(Error::invalid("mentee_id", "is required when a coordinator books"));
            }
            (Some(id), false) if id != who.user_id => {
                return Err(Error::denied("a mentee may only book for itself"));
            }
            _ => who.user_id,
        };
        booking::check_slot(req.start_time, req.end_time, self.rules.time_rules(), Utc::now())?;
        let tx = unit.tx();
        let listing = directory::get_listing(&mut **tx, req.listing_id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Listing, req.listing_id))?;
        let mentor_id = listing.mentor_id.ok_or_else(|| no_mentor(listing.id))?;
        if directory::get_mentee(&mut **tx, mentee_id).await?.is_none() {
            return Err(Error::not_found(Resource::Mentee, mentee_id));
        }
        self.check_calendar(tx, mentor_id, mentee_id, (req.start_time, req.end_time), None)
            .await?;
        let tx = unit.tx();
        let now = super::now();
        let draft = Booking {
            id: Uuid::now_v7(),
            listing_id: listing.id,
            mentor_id,
            mentee_id,
            start_time: req.start_time,
            end_time: req.end_time,
            status: BookingStatus::Draft,
            origin: BookingOrigin::Requested,
            notes: req.notes,
            reason: String::new(),
            session_id: None,
            rescheduled_from: None,
            rescheduled_to: None,
            version: 1,
            created_at: now,
            updated_at: now,
            names: Default::default(),
        };
        let created = store_bookings::insert(tx, &draft).await?;
        store_bookings::audit(tx, created.id, None, BookingStatus::Draft, &actor, "").await?;
        Ok(created)
    }

    pub async fn get_booking(&self, who: &Principal, id: Uuid) -> Result<Booking> {
        let booking = store_bookings::get(&mut *self.connection().await?, id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Booking, id))?;
        if !who.can_see(booking.participants()) {
            return Err(Error::denied(
                "only the booking's participants, coordinators and services may read it",
            ));
        }
        Ok(booking)
    }

    /// BatchGetBookings (AIP-231): every one, in the order asked, or the
    /// first id that is unknown or hidden from the caller, by name.
    pub async fn batch_get_bookings(&self, who: &Principal, ids: Vec<Uuid>) -> Result<Vec<Booking>> {
        let found = store_bookings::get_many(&mut *self.connection().await?, &ids).await?;
        super::in_order(
            ids,
            found,
            |b| b.id,
            Resource::Booking,
            |b| who.can_see(b.participants()),
        )
    }

    /// A page of the bookings the caller may see, in the order asked for
    /// (newest first by default).
    pub async fn list_bookings(&self, who: &Principal, q: BookingQuery) -> Result<(Vec<Booking>, String)> {
        let visibility = who.visibility();
        let bound = (&q.filter, format!("{visibility:?}"));
        let sort = q.filter.sort;
        let key = |b: &Booking| (sort.of(b.created_at, b.start_time), b.id);
        page::keyset(&bound, &q.page, key, async |after, limit| {
            store_bookings::list(&mut *self.connection().await?, &q.filter, visibility, after, limit).await
        })
        .await
    }

    /// The times the mentor (or the listing's mentor) can be booked for over
    /// the range: what CreateBooking would accept now (`domain::openings`).
    pub async fn list_available_slots(&self, who: &Principal, q: SlotQuery) -> Result<Openings> {
        let bounds = self.rules.booking_bounds;
        if q.length < bounds.min || q.length > bounds.max {
            return Err(Error::invalid(
                "slot_duration",
                format!(
                    "must be between {} and {} minutes (the booking bounds), got {} minutes",
                    bounds.min.num_minutes(),
                    bounds.max.num_minutes(),
                    q.length.num_minutes()
                ),
            ));
        }
        let mut conn = self.connection().await?;
        let mentor_id = match q.of {
            CalendarOf::Mentor(id) => id,
            CalendarOf::Listing(id) => {
                let listing = directory::get_listing(&mut *conn, id)
                    .await?
                    .ok_or_else(|| Error::not_found(Resource::Listing, id))?;
                listing.mentor_id.ok_or_else(|| no_mentor(id))?
            }
        };
        let mentor = directory::get_mentor(&mut conn, mentor_id, self.rules.default_mentor_limit)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Mentor, mentor_id))?;
        if !mentor.accepting_sessions {
            return Err(not_accepting(mentor_id));
        }
        let tz = availability::parse_timezone("timezone", &mentor.timezone)
            .map_err(|_| store::corrupt(format!("mentor {} time zone", mentor.id)))?;
        let shown_in = match &q.time_zone {
            Some(zone) => availability::parse_timezone("time_zone", zone)?,
            None => tz,
        };
        // A mentee cannot book over its own accepted bookings either.
        let mentee = (who.has(Role::Mentee) && !who.has(Role::Coordinator)).then_some(who.user_id);
        let bound = (&q, mentee);
        let after: Option<DateTime<Utc>> = page::decode(&bound, &q.page.token)?;
        let length = q.length;
        let taken = store_bookings::taken_times(&mut *conn, mentor_id, mentee, q.from, q.to + length).await?;
        drop(conn);
        let calendar = openings::Calendar {
            windows: &mentor.availability,
            tz,
            taken,
        };
        let found = openings::openings(
            &calendar,
            &openings::Ask {
                from: q.from,
                to: q.to,
                length,
                step: q.step.unwrap_or(length),
                earliest: Utc::now() + self.rules.min_notice,
                after,
                limit: usize::try_from(q.page.size + 1).unwrap_or(usize::MAX),
            },
        );
        let (openings, next_page_token) = page::finish(found, q.page.size, &bound, |(start, _)| *start)?;
        Ok(Openings {
            mentor_id,
            shown_in,
            openings,
            next_page_token,
        })
    }

    /// The calendar's checks of a booking's time (CreateBooking's, and a
    /// reschedule's): the mentor accepts bookings, the time lies inside one
    /// of its windows, and neither participant has an accepted booking then
    /// (other than `except`, the booking a reschedule moves).
    pub(crate) async fn check_calendar(
        &self,
        tx: &mut Tx,
        mentor_id: Uuid,
        mentee_id: Uuid,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        except: Option<Uuid>,
    ) -> Result<()> {
        let mentor = directory::get_mentor(tx, mentor_id, self.rules.default_mentor_limit)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Mentor, mentor_id))?;
        if !mentor.accepting_sessions {
            return Err(not_accepting(mentor_id));
        }
        let tz = availability::parse_timezone("timezone", &mentor.timezone)
            .map_err(|_| store::corrupt(format!("mentor {} time zone", mentor.id)))?;
        if !availability::fits(&mentor.availability, tz, start, end) {
            return Err(Error::precondition(
                Reason::OutsideAvailability,
                format!("mentors/{mentor_id}"),
                format!(
                    "the booking does not lie within one of the mentor's availability windows ({})",
                    mentor.timezone
                ),
            )
            .with_metadata("timezone", mentor.timezone));
        }
        if let Some(who_overlaps) =
            store_bookings::overlap(&mut **tx, mentor_id, mentee_id, (start, end), except).await?
        {
            return Err(Error::precondition(
                Reason::BookingOverlap,
                "bookings",
                format!("the {who_overlaps} already has an accepted booking overlapping this time"),
            )
            .with_metadata("conflict", who_overlaps));
        }
        Ok(())
    }

    /// A booking's audit log, a page at a time (the key is the last seq).
    pub async fn list_booking_events(&self, who: &Principal, q: LogQuery) -> Result<(Vec<BookingEvent>, String)> {
        self.get_booking(who, q.of).await?;
        let bound = ("booking_events", q.of);
        page::keyset(
            &bound,
            &q.page,
            |e: &BookingEvent| e.seq,
            async |after, limit| {
                store_bookings::events(&mut *self.connection().await?, q.of, after.unwrap_or(0), limit).await
            },
        )
        .await
    }

    /// DRAFT → ACCEPTED and the SCHEDULED session, in one transaction.
    pub async fn accept_booking(&self, unit: &mut Unit, who: &Principal, id: Uuid) -> Result<(Booking, Session)> {
        if let Some((_, Some(old))) = store_bookings::links(&mut **unit.tx(), id).await? {
            // A request to move a meeting: lock the meeting it would replace
            // first, in the order every path that changes a meeting takes.
            store_bookings::lock_meeting(unit.tx(), old).await?;
        }
        let tx = unit.tx();
        let (current, actor) = lock_for(tx, who, id, "AcceptBooking").await?;
        booking::decide(id, current.status, BookingStatus::Accepted)?;
        if current.origin == BookingOrigin::Requested {
            if current.start_time <= Utc::now() {
                return Err(Error::precondition(
                    Reason::BookingExpired,
                    format!("bookings/{id}"),
                    "the booking's start time has passed; it can no longer be accepted",
                ));
            }
            if let Some(old) = current.rescheduled_from {
                // A mentee's request to move a meeting: accepting it swaps the two.
                return self.accept_reschedule(unit, &current, old, &actor).await;
            }
            // Accepting takes the slot: serialize with other accepts of either participant.
            store_bookings::lock_participants(tx, current.mentor_id, current.mentee_id).await?;
        }
        let mut accepted = store_bookings::set_status(tx, id, BookingStatus::Accepted, "").await?;
        store_bookings::audit(tx, id, Some(current.status), BookingStatus::Accepted, &actor, "").await?;
        let config = self.rules.default_session_config.clone();
        let session = self
            .create_session_for(unit, &accepted, config, &actor, "booking", Carried::fresh())
            .await?;
        accepted.session_id = Some(session.id);
        Ok((accepted, session))
    }

    pub async fn decline_booking(&self, unit: &mut Unit, who: &Principal, c: CloseBooking) -> Result<Booking> {
        close_booking(unit.tx(), who, c, BookingStatus::Declined).await
    }

    pub async fn cancel_booking(&self, unit: &mut Unit, who: &Principal, c: CloseBooking) -> Result<Booking> {
        close_booking(unit.tx(), who, c, BookingStatus::Cancelled).await
    }

    /// Inserts the session of an ACCEPTED booking with its CREATED event:
    /// SCHEDULED for a requested booking; for an on-demand one, what
    /// admission decides (ACTIVE or QUEUED).
    pub(crate) async fn create_session_for(
        &self,
        unit: &mut Unit,
        booking: &Booking,
        config: crate::domain::config::SessionConfig,
        actor: &Actor,
        strategy: &str,
        carried: Carried,
    ) -> Result<Session> {
        let now = super::now();
        let mut new = Session {
            id: carried.id,
            booking_id: booking.id,
            listing_id: booking.listing_id,
            mentor_id: booking.mentor_id,
            mentee_id: booking.mentee_id,
            start_time: booking.start_time,
            end_time: booking.end_time,
            status: SessionStatus::Scheduled,
            stage: None,
            config,
            queued_at: None,
            started_at: None,
            ended_at: None,
            active_banked_us: 0,
            active_since: None,
            paused_at: None,
            report: None,
            failure: None,
            cancel_reason: String::new(),
            check_ins: Default::default(),
            last_seq: 0,
            version: 1,
            created_at: now,
            updated_at: now,
            queue: None,
            notes: carried.notes,
            metadata: carried.metadata,
            rescheduled_from: carried.rescheduled_from,
            rescheduled_to: None,
            names: booking.names.clone(),
        };
        if booking.origin == BookingOrigin::OnDemand {
            let status = self.admit(unit, &new).await?;
            clocks::enter(&mut new, status, now);
        }
        let event = EventInput {
            event_type: EventType::Created,
            actor,
            reason: "",
            details: serde_json::json!({
                "booking_id": booking.id,
                "origin": booking.origin.as_str(),
                "mentor_id": booking.mentor_id,
                "assignment": { "mentor_id": booking.mentor_id, "strategy": strategy },
            }),
        };
        let created = unit.insert_session(&new, event).await?;
        store_assignments::record(
            unit.tx(),
            NewAssignment {
                session_id: created.id,
                mentor_id: created.mentor_id,
                previous_mentor_id: None,
                strategy,
                reason: "",
                actor,
            },
        )
        .await?;
        self.with_queue_info(unit.tx(), created).await
    }
}

/// What a new session starts with besides its booking: a fresh id and
/// nothing else, or what a reschedule carries over from the session it
/// replaces.
pub(crate) struct Carried {
    pub id: Uuid,
    pub rescheduled_from: Option<Uuid>,
    pub notes: String,
    pub metadata: serde_json::Value,
}

impl Carried {
    pub(crate) fn fresh() -> Carried {
        Carried {
            id: Uuid::now_v7(),
            rescheduled_from: None,
            notes: String::new(),
            metadata: serde_json::json!({}),
        }
    }
}

/// A page of ListAvailableSlots.
pub struct Openings {
    pub mentor_id: Uuid,
    /// The zone the caller asked to see them in (the mentor's by default).
    pub shown_in: chrono_tz::Tz,
    pub openings: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub next_page_token: String,
}

fn no_mentor(listing_id: Uuid) -> Error {
    Error::precondition(
        Reason::ListingHasNoMentor,
        format!("listings/{listing_id}"),
        "this listing has no mentor to book; it can only be worked on demand",
    )
}

fn not_accepting(mentor_id: Uuid) -> Error {
    Error::precondition(
        Reason::MentorNotAccepting,
        format!("mentors/{mentor_id}"),
        "this mentor does not accept new bookings",
    )
}

/// DRAFT → DECLINED or CANCELLED, with the reason.
async fn close_booking(tx: &mut Tx, who: &Principal, c: CloseBooking, to: BookingStatus) -> Result<Booking> {
    let CloseBooking { booking_id: id, reason } = c;
    let method = match to {
        BookingStatus::Declined => "DeclineBooking",
        _ => "CancelBooking",
    };
    let (current, actor) = lock_for(tx, who, id, method).await?;
    booking::decide(id, current.status, to).map_err(|e| {
        if current.status == BookingStatus::Accepted && to == BookingStatus::Cancelled {
            Error::precondition(
                Reason::BookingNotDraft,
                format!("bookings/{id}"),
                "an ACCEPTED booking cannot be cancelled; cancel its session instead",
            )
            .with_metadata("current_status", current.status.as_str())
            .with_metadata(
                "session_id",
                current.session_id.map(|s| s.to_string()).unwrap_or_default(),
            )
        } else {
            e
        }
    })?;
    let closed = store_bookings::set_status(tx, id, to, &reason).await?;
    store_bookings::audit(tx, id, Some(current.status), to, &actor, &reason).await?;
    Ok(closed)
}

/// Locks a booking and checks that `who` may call `method` on it.
pub(crate) async fn lock_for(tx: &mut Tx, who: &Principal, id: Uuid, method: &str) -> Result<(Booking, Actor)> {
    let current = store_bookings::lock(tx, id)
        .await?
        .ok_or_else(|| Error::not_found(Resource::Booking, id))?;
    let actor = who.act_on(method, current.participants())?;
    Ok((current, actor))
}
