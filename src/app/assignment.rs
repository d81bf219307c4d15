//! Mentor assignment use cases (SPEC §4.3): who mentors a session started
//! on demand, ReassignMentor, and the assignment history.

use uuid::Uuid;

use super::{App, page};
use crate::domain::{
    Error, Reason, Resource, Result,
    access::Principal,
    assignment, availability,
    command::Reassignment,
    model::{EventType, Listing, MentorAssignment, Session},
    query::LogQuery,
    session::{Requester, SessionStatus},
};
use crate::store::{
    assignments::{self as store_assignments, NewAssignment},
    bookings as store_bookings, capacity as store_capacity, directory,
    sessions::EventInput,
    unit::Unit,
};

/// The mentor of a new on-demand session and how it was chosen.
pub(crate) struct Chosen {
    pub mentor_id: Uuid,
    /// request, listing, or the strategy's name.
    pub strategy: &'static str,
}

fn not_accepting(mentor_id: Uuid) -> Error {
    Error::precondition(
        Reason::MentorNotAccepting,
        format!("mentors/{mentor_id}"),
        "this mentor does not accept new sessions",
    )
}

impl App {
    /// Who mentors a session started on demand: the mentor the request
    /// prefers, else the listing's, else the configured strategy among the
    /// mentors who accept sessions and have the listing's skill area. A
    /// preferred mentor without a free concurrency slot falls back to the
    /// strategy when `fallback_to_auto` is set (and nobody free is found: it
    /// stays, and admission queues the session for it).
    pub(crate) async fn choose_mentor(
        &self,
        unit: &mut Unit,
        preferred: Option<Uuid>,
        mentee_id: Uuid,
        listing: &Listing,
    ) -> Result<Chosen> {
        let settings = self.rules.assignment;
        let tx = unit.tx();
        let mut keep = None;
        if let Some(mentor_id) = preferred {
            let accepting = directory::mentor_accepting(&mut **tx, mentor_id)
                .await?
                .ok_or_else(|| Error::not_found(Resource::Mentor, mentor_id))?;
            let chosen = Chosen {
                mentor_id,
                strategy: "request",
            };
            match (accepting, settings.fallback_to_auto) {
                (false, false) => return Err(not_accepting(mentor_id)),
                (false, true) => {}
                (true, false) => return Ok(chosen),
                (true, true) => {
                    let holding = store_capacity::holding(tx, mentor_id, mentee_id).await?;
                    let limit = holding.mentor_limit.unwrap_or(self.rules.default_mentor_limit);
                    if holding.mentor < i64::from(limit) {
                        return Ok(chosen);
                    }
                    keep = Some(chosen);
                }
            }
        } else if let Some(mentor_id) = listing.mentor_id {
            return match directory::mentor_accepting(&mut **tx, mentor_id).await? {
                Some(true) => Ok(Chosen {
                    mentor_id,
                    strategy: "listing",
                }),
                Some(false) => Err(not_accepting(mentor_id)),
                None => Err(Error::not_found(Resource::Mentor, mentor_id)),
            };
        }
        let candidates = self.available_candidates(unit, &listing.skill_area).await?;
        let picked = assignment::choose(&candidates, settings.strategy)
            .and_then(|id| candidates.iter().find(|c| c.mentor_id == id));
        match (picked, keep) {
            // A preferred mentor that is full stays unless the strategy finds a free one.
            (Some(c), Some(keep)) if !c.has_free_slot() => Ok(keep),
            (None, Some(keep)) => Ok(keep),
            (Some(c), _) => Ok(Chosen {
                mentor_id: c.mentor_id,
                strategy: settings.strategy.as_str(),
            }),
            (None, None) => Err(Error::precondition(
                Reason::NoEligibleMentor,
                format!("listings/{}", listing.id),
                format!(
                    "no mentor in the listing's skill area {:?} accepts sessions and is available now \
                     (inside one of their weekly windows, not in an accepted booking)",
                    listing.skill_area
                ),
            )),
        }
    }

    /// The mentors the strategies may choose from now: accepting sessions,
    /// with the skill area, inside one of their weekly windows on their own
    /// clock (none: always) and not in an ACCEPTED booking.
    async fn available_candidates(&self, unit: &mut Unit, skill_area: &str) -> Result<Vec<assignment::Candidate>> {
        let now = chrono::Utc::now();
        let tx = unit.tx();
        let found = store_assignments::candidates(tx, skill_area, self.rules.default_mentor_limit, now).await?;
        let ids: Vec<Uuid> = found.iter().map(|(c, _)| c.mentor_id).collect();
        let windows = directory::availability_of(&mut **tx, &ids).await?;
        let mut open = Vec::with_capacity(found.len());
        for (candidate, zone) in found {
            let tz = availability::parse_timezone("timezone", &zone)
                .map_err(|_| crate::store::corrupt(format!("mentor {} time zone", candidate.mentor_id)))?;
            let own = windows.get(&candidate.mentor_id).map_or(&[][..], Vec::as_slice);
            if availability::open_at(own, tz, now) {
                open.push(candidate);
            }
        }
        Ok(open)
    }

    /// ReassignMentor (SPEC §4.3): any live session, with a reason. A session
    /// holding a concurrency slot needs one free with the new mentor (the old
    /// mentor's slot then promotes its queue); a SCHEDULED session's booking
    /// moves too, and must not overlap the new mentor's accepted bookings.
    pub async fn reassign_mentor(&self, unit: &mut Unit, who: &Principal, r: Reassignment) -> Result<Session> {
        let actor = who.actor_for("ReassignMentor")?;
        let before =
            super::sessions::lock_visible(unit, Requester::Caller(who), r.session_id, r.etag.as_deref()).await?;
        if before.status.is_terminal() {
            return Err(Error::precondition(
                Reason::SessionTerminal,
                format!("sessions/{}", before.id),
                format!(
                    "the session is {}; its mentor can no longer change",
                    before.status.as_str()
                ),
            )
            .with_metadata("current_status", before.status.as_str()));
        }
        if before.mentor_id == r.mentor_id {
            return self.with_queue_info(unit.tx(), before).await;
        }
        let tx = unit.tx();
        match directory::mentor_accepting(&mut **tx, r.mentor_id).await? {
            None => return Err(Error::not_found(Resource::Mentor, r.mentor_id)),
            Some(false) => return Err(not_accepting(r.mentor_id)),
            Some(true) => {}
        }
        if before.status.holds_concurrency_slot() {
            store_capacity::lock_participants(tx, r.mentor_id, before.mentee_id).await?;
            let holding = store_capacity::holding(tx, r.mentor_id, before.mentee_id).await?;
            let limit = i64::from(holding.mentor_limit.unwrap_or(self.rules.default_mentor_limit));
            if holding.mentor >= limit {
                return Err(Error::precondition(
                    Reason::MentorFull,
                    format!("mentors/{}", r.mentor_id),
                    "the new mentor has no free concurrency slot for this session",
                )
                .with_metadata("limit", "mentor")
                .with_metadata("current", holding.mentor.to_string())
                .with_metadata("maximum", limit.to_string()));
            }
        }
        if before.status == SessionStatus::Scheduled {
            // The booking's time slot moves with it: serialize with other
            // slot-taking transactions of the new mentor, then let the
            // exclusion constraint judge.
            store_bookings::lock_participants(tx, r.mentor_id, before.mentee_id).await?;
            store_bookings::set_mentor(tx, before.booking_id, r.mentor_id).await?;
            // A request to move the meeting was addressed to the old mentor.
            super::reschedule::drop_request_for(unit, before.booking_id, &actor, "the meeting's mentor changed")
                .await?;
        }
        let s = Session {
            mentor_id: r.mentor_id,
            ..before.clone()
        };
        let event = EventInput {
            event_type: EventType::MentorAssigned,
            actor: &actor,
            reason: &r.reason,
            details: serde_json::json!({
                "from_mentor_id": before.mentor_id,
                "to_mentor_id": r.mentor_id,
                "strategy": "reassigned",
            }),
        };
        let saved = unit.save_session(&before, &s, event).await?;
        store_assignments::record(
            unit.tx(),
            NewAssignment {
                session_id: saved.id,
                mentor_id: r.mentor_id,
                previous_mentor_id: Some(before.mentor_id),
                strategy: "reassigned",
                reason: &r.reason,
                actor: &actor,
            },
        )
        .await?;
        // The old mentor's freed slot, or the queued session's new mentor, may admit someone.
        if before.status.holds_concurrency_slot() || before.status == SessionStatus::Queued {
            self.release(unit, None).await?;
        }
        let now = super::sessions::reload(unit, saved).await?;
        self.with_queue_info(unit.tx(), now).await
    }

    /// A session's assignment history, oldest first, a page at a time.
    pub async fn list_mentor_assignments(
        &self,
        who: &Principal,
        q: LogQuery,
    ) -> Result<(Vec<MentorAssignment>, String)> {
        self.get_session(who, q.of).await?;
        let bound = ("assignments", q.of);
        page::keyset(
            &bound,
            &q.page,
            |a: &MentorAssignment| a.id,
            async |after, limit| {
                store_assignments::list(&mut *self.connection().await?, q.of, after.unwrap_or(0), limit).await
            },
        )
        .await
    }
}
