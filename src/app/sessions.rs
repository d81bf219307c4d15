//! Session use cases (SPEC §4).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{App, page};
use crate::domain::{
    Error, Result,
    access::{Principal, Role},
    model::{EventType, Session},
    session::{self, Command, Requester},
};
use crate::store::{
    self,
    sessions::{self as store_sessions, SessionFilter, SortField},
};

/// The etag clients send back: the session's version.
pub fn etag(version: i64) -> String {
    version.to_string()
}

/// What a transition writes besides the status.
#[derive(Debug, Default, Clone)]
pub struct TransitionInput {
    pub etag: Option<String>,
    pub reason: String,
    pub report: Option<serde_json::Value>,
    pub failure: Option<serde_json::Value>,
}

impl App {
    pub async fn get_session(&self, who: &Principal, id: Uuid) -> Result<Session> {
        let session = store_sessions::get(&self.pool, id)
            .await?
            .ok_or_else(|| Error::not_found("session", id))?;
        if !who.can_see(session.participants()) {
            return Err(Error::denied(
                "only the session's participants, coordinators and services may read it",
            ));
        }
        Ok(session)
    }

    /// A page of sessions plus, when asked, the total matching the filter.
    pub async fn list_sessions(
        &self,
        who: &Principal,
        filter: SessionFilter,
        page_size: i64,
        page_token: &str,
        with_total: bool,
    ) -> Result<(Vec<Session>, String, Option<i64>)> {
        who.require(
            &[Role::Coordinator, Role::Service, Role::Mentor, Role::Mentee],
            "ListSessions",
        )?;
        let visibility = who.visibility();
        let bound = (&filter, format!("{visibility:?}"));
        let after = page::decode(&bound, page_token)?;
        let rows = store_sessions::list(&self.pool, &filter, visibility, after, page_size + 1).await?;
        let sort = filter.sort;
        let (rows, next) = page::finish(rows, page_size, &bound, |s: &Session| {
            let value: DateTime<Utc> = match sort {
                SortField::CreatedAt => s.created_at,
                SortField::StartTime => s.start_time,
            };
            (value, s.id)
        })?;
        let total = if with_total {
            Some(store_sessions::count(&self.pool, &filter, visibility).await?)
        } else {
            None
        };
        Ok((rows, next, total))
    }

    /// Applies one command of the state machine to a session, with its event,
    /// in one transaction under the session's row lock.
    pub async fn transition(
        &self,
        who: Requester<'_>,
        id: Uuid,
        command: Command,
        input: TransitionInput,
    ) -> Result<Session> {
        let mut tx = store::begin(&self.pool).await?;
        let mut s = store_sessions::lock(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found("session", id))?;
        if let Requester::Caller(p) = who
            && !p.can_see(s.participants())
        {
            return Err(Error::denied(
                "only the session's participants, coordinators and services may act on it",
            ));
        }
        if let Some(expected) = &input.etag
            && *expected != etag(s.version)
        {
            return Err(Error::EtagMismatch {
                kind: "session",
                current: etag(s.version),
            });
        }
        let decision = session::decide(id, s.status, command, who, s.participants())?;
        if decision.no_op {
            return Ok(s);
        }
        let from = s.status;
        let now = Utc::now();
        session::enter(&mut s, decision.to, now);
        if input.report.is_some() {
            s.report = input.report;
        }
        if input.failure.is_some() {
            s.failure = input.failure;
        }
        if command == Command::Cancel || command == Command::Timeout {
            s.cancel_reason = input.reason.clone();
        }
        let saved = store_sessions::save(&mut tx, &s, session::deadline(&s, &self.rules.timeouts)).await?;
        store_sessions::append_event(
            &mut tx,
            id,
            store_sessions::NewEvent {
                event_type: EventType::StatusChanged,
                from_status: Some(from),
                to_status: Some(decision.to),
                from_stage: saved.stage.as_deref(),
                to_stage: saved.stage.as_deref(),
                actor: &decision.actor,
                reason: &input.reason,
                details: serde_json::json!({ "command": command.name() }),
            },
        )
        .await?;
        store::commit(tx).await?;
        Ok(Session {
            last_seq: saved.last_seq + 1,
            ..saved
        })
    }

    /// The audit log of a session, a page at a time (the key is the last seq).
    pub async fn list_session_events(
        &self,
        who: &Principal,
        id: Uuid,
        page_size: i64,
        page_token: &str,
    ) -> Result<(Vec<crate::domain::model::SessionEvent>, String)> {
        self.get_session(who, id).await?;
        let bound = ("events", id);
        let after: i64 = page::decode(&bound, page_token)?.unwrap_or(0);
        let rows = store_sessions::events(&self.pool, id, after, page_size + 1).await?;
        page::finish(rows, page_size, &bound, |e| e.seq)
    }
}
