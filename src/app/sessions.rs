//! Session use cases (SPEC §4).

use chrono::Utc;
use uuid::Uuid;

use super::{App, page};
use crate::domain::{
    Error, Reason, Resource, Result,
    access::Principal,
    booking::{BookingOrigin, BookingStatus},
    clocks,
    command::{CheckIn, ConfigUpdate, NewSession, NotesUpdate, StageChange, Transition},
    config,
    model::{Booking, EventType, Session, SessionEvent},
    query::{LogQuery, SessionQuery},
    session::{self, Command, Requester, SessionStatus},
};
use crate::store::unit::Unit;
use crate::store::{
    bookings as store_bookings, directory,
    sessions::{self as store_sessions, EventInput},
};

/// The session as it stands now in the unit's transaction (after changes
/// the unit made to it beyond `s`, such as a promotion).
pub(crate) async fn reload(unit: &mut Unit, s: Session) -> Result<Session> {
    Ok(store_sessions::lock(unit.tx(), s.id).await?.unwrap_or(s))
}

/// Locks a session the requester may see and checks its etag.
pub(crate) async fn lock_visible(
    unit: &mut Unit,
    who: Requester<'_>,
    id: Uuid,
    etag_expected: Option<&str>,
) -> Result<Session> {
    let s = store_sessions::lock(unit.tx(), id)
        .await?
        .ok_or_else(|| Error::not_found(Resource::Session, id))?;
    if let Requester::Caller(p) = who
        && !p.can_see(s.participants())
    {
        return Err(Error::denied(
            "only the session's participants, coordinators and services may act on it",
        ));
    }
    if let Some(expected) = etag_expected
        && expected != crate::domain::model::etag(s.version)
    {
        return Err(Error::EtagMismatch {
            kind: "session",
            current: crate::domain::model::etag(s.version),
        });
    }
    Ok(s)
}

impl App {
    pub async fn get_session(&self, who: &Principal, id: Uuid) -> Result<Session> {
        let session = self
            .coalescer
            .get(id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Session, id))?;
        if !who.can_see(session.participants()) {
            return Err(Error::denied(
                "only the session's participants, coordinators and services may read it",
            ));
        }
        if session.status != SessionStatus::Queued {
            return Ok(session);
        }
        let mut conn = self.connection().await?;
        self.with_queue_info(&mut conn, session).await
    }

    /// BatchGetSessions (AIP-231): every one, in the order asked, or the
    /// first id that is unknown or hidden from the caller, by name. One
    /// statement reads them all.
    pub async fn batch_get_sessions(&self, who: &Principal, ids: Vec<Uuid>) -> Result<Vec<Session>> {
        let mut conn = self.connection().await?;
        let found = store_sessions::get_many(&mut *conn, &ids)
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Result<Vec<Session>>>()?;
        let sessions = super::in_order(
            ids,
            found,
            |s| s.id,
            Resource::Session,
            |s| who.can_see(s.participants()),
        )?;
        self.with_queue_infos(&mut conn, sessions).await
    }

    /// Changes a session's notes or metadata: not a lifecycle change, so
    /// any status may take it; a NOTES_UPDATED event, and nothing when
    /// nothing changes.
    pub async fn update_session_notes(&self, unit: &mut Unit, who: &Principal, u: NotesUpdate) -> Result<Session> {
        let before = lock_visible(unit, Requester::Caller(who), u.session_id, u.etag.as_deref()).await?;
        let actor = who.act_on("UpdateSessionNotes", before.participants())?;
        let mut s = before.clone();
        let mut changed = Vec::new();
        if let Some(notes) = u.notes
            && notes != s.notes
        {
            s.notes = notes;
            changed.push("notes");
        }
        if let Some(metadata) = u.metadata
            && metadata != s.metadata
        {
            s.metadata = metadata;
            changed.push("metadata");
        }
        if changed.is_empty() {
            return self.with_queue_info(unit.tx(), before).await;
        }
        let event = EventInput {
            event_type: EventType::NotesUpdated,
            actor: &actor,
            reason: "",
            details: serde_json::json!({ "changed": changed }),
        };
        let saved = unit.save_session(&before, &s, event).await?;
        self.with_queue_info(unit.tx(), saved).await
    }

    /// A page of the sessions the caller may see plus, when asked, the total
    /// matching the filter.
    pub async fn list_sessions(&self, who: &Principal, q: SessionQuery) -> Result<(Vec<Session>, String, Option<i64>)> {
        let visibility = who.visibility();
        let bound = (&q.filter, format!("{visibility:?}"));
        let sort = q.filter.sort;
        let key = |s: &Session| (sort.of(s.created_at, s.start_time), s.id);
        let (rows, next) = page::keyset(&bound, &q.page, key, async |after, limit| {
            store_sessions::list(&mut *self.connection().await?, &q.filter, visibility, after, limit).await
        })
        .await?;
        let mut rows = rows;
        if rows.iter().any(|s| s.status == SessionStatus::Queued) {
            rows = self.with_queue_infos(&mut *self.connection().await?, rows).await?;
        }
        let total = if q.with_total {
            Some(store_sessions::count(&mut *self.connection().await?, &q.filter, visibility).await?)
        } else {
            None
        };
        Ok((rows, next, total))
    }

    /// Applies one command of the state machine to a session, with its event,
    /// under the session's row lock, in the unit of work.
    pub async fn transition(&self, unit: &mut Unit, who: Requester<'_>, t: Transition) -> Result<Session> {
        let id = t.session_id;
        let before = lock_visible(unit, who, id, t.etag.as_deref()).await?;
        let decision = session::decide(id, before.status, t.command, who, before.participants())?;
        if decision.no_op {
            return self.with_queue_info(unit.tx(), before).await;
        }
        // Starting takes a concurrency slot: admission decides ACTIVE or QUEUED.
        let to = match t.command {
            Command::Start => self.admit(unit, &before).await?,
            _ => decision.to,
        };
        let mut s = before.clone();
        clocks::enter(&mut s, to, super::now());
        if t.report.is_some() {
            s.report = t.report;
        }
        if t.failure.is_some() {
            s.failure = t.failure;
        }
        if decision.to == SessionStatus::Cancelled {
            s.cancel_reason = t.reason.clone();
            // A cancelled session gives its booking's time back to mentor and mentee.
            store_bookings::release_slot(unit.tx(), s.booking_id).await?;
        }
        let event = EventInput {
            event_type: EventType::StatusChanged,
            actor: &decision.actor,
            reason: &t.reason,
            details: serde_json::json!({ "command": t.command.name() }),
        };
        let saved = unit.save_session(&before, &s, event).await?;
        if before.status.holds_concurrency_slot() && !saved.status.holds_concurrency_slot() {
            self.release(unit, Some(saved.id)).await?;
        }
        if before.status == SessionStatus::Scheduled && saved.status != SessionStatus::Scheduled {
            // A request to move a meeting that has started or ended has nothing left to move.
            self.drop_pending_reschedule(unit, &saved, &decision.actor).await?;
        }
        self.with_queue_info(unit.tx(), saved).await
    }

    /// Labels where an ACTIVE session is; the same stage again changes nothing.
    pub async fn advance_stage(&self, unit: &mut Unit, who: &Principal, c: StageChange) -> Result<Session> {
        let id = c.session_id;
        let before = lock_visible(unit, Requester::Caller(who), id, c.etag.as_deref()).await?;
        let decision = session::decide(
            id,
            before.status,
            Command::AdvanceStage,
            Requester::Caller(who),
            before.participants(),
        )?;
        let allowed = &before.config.allowed_stages;
        if !allowed.is_empty() && !allowed.contains(&c.stage) {
            return Err(Error::precondition(
                Reason::StageNotAllowed,
                format!("sessions/{id}"),
                format!("stage {:?} is not one of the session's allowed stages", c.stage),
            )
            .with_metadata("allowed_stages", allowed.join(",")));
        }
        if before.stage.as_deref() == Some(c.stage.as_str()) {
            return Ok(before);
        }
        let s = Session {
            stage: Some(c.stage),
            ..before.clone()
        };
        let event = EventInput {
            event_type: EventType::StageChanged,
            actor: &decision.actor,
            reason: "",
            details: serde_json::json!({ "from_stage": before.stage }),
        };
        unit.save_session(&before, &s, event).await
    }

    /// RecordCheckIn: a note, and a blocker when one is reported, on an
    /// ACTIVE session. The misses and the escalation level start over, and
    /// the next check-in is due one interval of active time from now.
    pub async fn record_check_in(&self, unit: &mut Unit, who: &Principal, c: CheckIn) -> Result<Session> {
        let id = c.session_id;
        let before = lock_visible(unit, Requester::Caller(who), id, c.etag.as_deref()).await?;
        let decision = session::decide(
            id,
            before.status,
            Command::CheckIn,
            Requester::Caller(who),
            before.participants(),
        )?;
        let mut s = before.clone();
        clocks::check_in(&mut s, super::now());
        let event = EventInput {
            event_type: if c.blocker {
                EventType::BlockerReported
            } else {
                EventType::CheckedIn
            },
            actor: &decision.actor,
            reason: "",
            details: serde_json::json!({
                "note": c.note,
                "blocker": c.blocker,
                "missed_before": before.check_ins.missed,
            }),
        };
        unit.save_session(&before, &s, event).await
    }

    /// A check-in of session `id` came due without one (the sweeper holds
    /// its row): CHECK_IN_MISSED, then ESCALATED when the level rises, both
    /// as SYSTEM. A session whose check-in is not due after all (no longer
    /// ACTIVE, say) only gets its due time corrected.
    pub async fn miss_check_in(&self, unit: &mut Unit, id: Uuid) -> Result<()> {
        let before = lock_visible(unit, Requester::System, id, None).await?;
        // The stored due time is only a copy: a replica of an older release
        // may have moved the session without keeping it. The session's own
        // clocks decide; a copy that was wrong is put right instead.
        let due = clocks::check_in_due(&before);
        if due.is_none_or(|at| at > super::now()) {
            return crate::store::deadlines::set_check_in_due(unit.tx(), id, due).await;
        }
        let decision = session::decide(
            id,
            before.status,
            Command::MissCheckIn,
            Requester::System,
            before.participants(),
        )?;
        let mut s = before.clone();
        let rose = clocks::miss_check_in(&mut s);
        let missed = EventInput {
            event_type: EventType::CheckInMissed,
            actor: &decision.actor,
            reason: "",
            details: serde_json::json!({ "missed": s.check_ins.missed }),
        };
        let saved = unit.save_session(&before, &s, missed).await?;
        if let Some(level) = rose {
            let escalated = EventInput {
                event_type: EventType::Escalated,
                actor: &decision.actor,
                reason: "",
                details: serde_json::json!({
                    "level": level,
                    "missed": saved.check_ins.missed,
                    "policy": saved.config.escalation_policy.as_str(),
                }),
            };
            unit.save_session(&saved, &saved, escalated).await?;
        }
        Ok(())
    }

    /// Starts a session on demand: the implicit ON_DEMAND booking (already
    /// ACCEPTED) and the session, in the unit of work.
    pub async fn create_session(&self, unit: &mut Unit, who: &Principal, req: NewSession) -> Result<Session> {
        let actor = who.actor_for("CreateSession")?;
        let mut config = match &req.template_id {
            Some(id) => config::template(&self.rules.templates, id, "template_id")?
                .config
                .clone(),
            None => self.rules.default_session_config.clone(),
        };
        if let Some((patch, paths)) = &req.overrides {
            config = config.apply_mask(patch, paths, "config_mask")?;
        }
        config.validate(&self.rules.config_limits, "config")?;
        let tx = unit.tx();
        let listing = directory::get_listing(&mut **tx, req.listing_id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Listing, req.listing_id))?;
        if directory::get_mentee(&mut **tx, req.mentee_id).await?.is_none() {
            return Err(Error::not_found(Resource::Mentee, req.mentee_id));
        }
        let chosen = self.choose_mentor(unit, req.mentor_id, req.mentee_id, &listing).await?;
        let mentor_id = chosen.mentor_id;
        let tx = unit.tx();
        let now = super::now();
        let booking = Booking {
            id: Uuid::now_v7(),
            listing_id: listing.id,
            mentor_id,
            mentee_id: req.mentee_id,
            start_time: now,
            end_time: now + chrono::Duration::seconds(config.max_duration_secs),
            status: BookingStatus::Accepted,
            origin: BookingOrigin::OnDemand,
            notes: String::new(),
            reason: String::new(),
            session_id: None,
            rescheduled_from: None,
            rescheduled_to: None,
            version: 1,
            created_at: now,
            updated_at: now,
            names: Default::default(),
        };
        let booking = store_bookings::insert(tx, &booking).await?;
        store_bookings::audit(tx, booking.id, None, BookingStatus::Accepted, &actor, "on demand").await?;
        self.create_session_for(
            unit,
            &booking,
            config,
            &actor,
            chosen.strategy,
            super::bookings::Carried::fresh(),
        )
        .await
    }

    /// Changes the fields of a live session's config named by the mask.
    /// Allowed to coordinators, services and the session's mentor.
    pub async fn update_session_config(&self, unit: &mut Unit, who: &Principal, u: ConfigUpdate) -> Result<Session> {
        let id = u.session_id;
        let before = lock_visible(unit, Requester::Caller(who), id, u.etag.as_deref()).await?;
        let actor = who.act_on("UpdateSessionConfig", before.participants())?;
        if before.status.is_terminal() {
            return Err(Error::precondition(
                Reason::SessionTerminal,
                format!("sessions/{id}"),
                format!(
                    "the session is {} and its config can no longer change",
                    before.status.as_str()
                ),
            )
            .with_metadata("current_status", before.status.as_str()));
        }
        let updated = before.config.apply_mask(&u.patch, &u.paths, "update_mask")?;
        updated.validate(&self.rules.config_limits, "config")?;
        let used = before.active_duration(Utc::now());
        if chrono::Duration::seconds(updated.max_duration_secs) < used {
            return Err(Error::precondition(
                Reason::MaxDurationBelowActiveTime,
                format!("sessions/{id}"),
                format!(
                    "max_duration cannot be below the {} s of active time already used",
                    used.num_seconds()
                ),
            ));
        }
        let changes: Vec<serde_json::Value> = before
            .config
            .diff(&updated)
            .into_iter()
            .map(|(field, old, new)| serde_json::json!({ "field": field, "old": old, "new": new }))
            .collect();
        if changes.is_empty() {
            return Ok(before);
        }
        let mut s = Session {
            config: updated,
            ..before.clone()
        };
        // A new check-in interval applies from now on, not to the past.
        clocks::reschedule_check_ins(&mut s, &before, super::now());
        let event = EventInput {
            event_type: EventType::ConfigUpdated,
            actor: &actor,
            reason: "",
            details: serde_json::json!({ "changes": changes }),
        };
        unit.save_session(&before, &s, event).await
    }

    /// The audit log of a session, a page at a time (the key is the last seq).
    pub async fn list_session_events(&self, who: &Principal, q: LogQuery) -> Result<(Vec<SessionEvent>, String)> {
        self.get_session(who, q.of).await?;
        let bound = ("events", q.of);
        page::keyset(
            &bound,
            &q.page,
            |e: &SessionEvent| e.seq,
            async |after, limit| {
                store_sessions::events(&mut *self.connection().await?, q.of, after.unwrap_or(0), limit).await
            },
        )
        .await
    }
}
