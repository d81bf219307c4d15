//! SessionService handlers. RPCs not listed here answer UNIMPLEMENTED
//! (generated default stubs) until their issue lands.

use tonic::{Request, Response, Status};

use super::{Api, auth::principal, begin_or_replay, convert, incomplete, pb};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::codegen::BoxStream;

use crate::app::sessions::{NewSession, TransitionInput};
use crate::app::watch::{SessionItem, decode_cursor};
use crate::domain::{
    Error, Violations,
    input::{self, MAX_TEXT_LEN},
    session::{Command, Requester},
};
use crate::store::{
    ParticipantFilter,
    sessions::{FeedFilter, SessionFilter, SortField},
};

fn etag(raw: &str) -> Option<String> {
    (!raw.is_empty()).then(|| raw.to_owned())
}

/// A state-machine command as one idempotent mutation; the response type
/// is the RPC's `{ Session session = 1; }`.
macro_rules! command {
    ($api:expr, $who:expr, $method:literal, $req:expr, $command:expr, $input:expr, $response:ident) => {{
        let id = input::id("session_id", &$req.session_id)?;
        let mut m = begin_or_replay!($api, $who, $method, $req);
        let session = $api
            .app
            .transition(&mut m.unit, Requester::Caller($who), id, $command, $input)
            .await?;
        m.finish(pb::$response {
            session: Some(session.into()),
        })
        .await
    }};
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for Api {
    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let who = principal(&req)?;
        let id = input::id("session_id", &req.get_ref().session_id)?;
        let session = self.app.get_session(&who, id).await?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let size = v.check(input::page_size(r.page_size));
        let mentee_id = v.check(input::optional_id("mentee_id", &r.mentee_id));
        let mentor_id = v.check(input::optional_id("mentor_id", &r.mentor_id));
        let listing_id = v.check(input::optional_id("listing_id", &r.listing_id));
        let statuses = v.check(convert::session_statuses("statuses", &r.statuses));
        let from = v.check(convert::opt_time("start_time_from", r.start_time_from.as_ref()));
        let to = v.check(convert::opt_time("start_time_to", r.start_time_to.as_ref()));
        let order = v.check(parse_order_by(&r.order_by));
        v.finish()?;
        let (
            Some(size),
            Some(mentee_id),
            Some(mentor_id),
            Some(listing_id),
            Some(statuses),
            Some(from),
            Some(to),
            Some((sort, descending)),
        ) = (size, mentee_id, mentor_id, listing_id, statuses, from, to, order)
        else {
            return Err(incomplete());
        };
        let filter = SessionFilter {
            participants: ParticipantFilter {
                mentee_id,
                mentor_id,
                listing_id,
                statuses,
            },
            start_from: from,
            start_to: to,
            sort,
            descending,
        };
        let (sessions, next, total) = self
            .app
            .list_sessions(&who, filter, size, &r.page_token, r.include_total_size)
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(Into::into).collect(),
            next_page_token: next,
            total_size: total.map_or(0, |t| i32::try_from(t).unwrap_or(i32::MAX)),
        }))
    }

    async fn start_session(
        &self,
        req: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let input = TransitionInput {
            etag: etag(&r.etag),
            ..Default::default()
        };
        command!(
            self,
            &who,
            "StartSession",
            r,
            Command::Start,
            input,
            StartSessionResponse
        )
    }

    async fn complete_session(
        &self,
        req: Request<pb::CompleteSessionRequest>,
    ) -> Result<Response<pb::CompleteSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        input::id("session_id", &r.session_id)?;
        let report = r.report.as_ref().map(report_json).transpose()?;
        let input = TransitionInput {
            etag: etag(&r.etag),
            report,
            ..Default::default()
        };
        command!(
            self,
            &who,
            "CompleteSession",
            r,
            Command::Complete,
            input,
            CompleteSessionResponse
        )
    }

    async fn pause_session(
        &self,
        req: Request<pb::PauseSessionRequest>,
    ) -> Result<Response<pb::PauseSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let input = TransitionInput {
            etag: etag(&r.etag),
            reason: input::optional_text("reason", &r.reason, MAX_TEXT_LEN)?,
            ..Default::default()
        };
        command!(
            self,
            &who,
            "PauseSession",
            r,
            Command::Pause,
            input,
            PauseSessionResponse
        )
    }

    async fn resume_session(
        &self,
        req: Request<pb::ResumeSessionRequest>,
    ) -> Result<Response<pb::ResumeSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let input = TransitionInput {
            etag: etag(&r.etag),
            ..Default::default()
        };
        command!(
            self,
            &who,
            "ResumeSession",
            r,
            Command::Resume,
            input,
            ResumeSessionResponse
        )
    }

    async fn fail_session(
        &self,
        req: Request<pb::FailSessionRequest>,
    ) -> Result<Response<pb::FailSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check(input::id("session_id", &r.session_id));
        let message = v.check(input::required_text("error_message", &r.error_message, MAX_TEXT_LEN));
        let details = r.details.as_ref().map(convert::struct_to_json);
        if details.as_ref().is_some_and(|d| d.to_string().len() > 64 * 1024) {
            v.add("details", "must be at most 64 KiB encoded");
        }
        v.finish()?;
        let input = TransitionInput {
            etag: etag(&r.etag),
            reason: message.clone().unwrap_or_default(),
            failure: Some(serde_json::json!({
                "error_message": message.unwrap_or_default(),
                "details": details.unwrap_or_else(|| serde_json::json!({})),
            })),
            ..Default::default()
        };
        command!(self, &who, "FailSession", r, Command::Fail, input, FailSessionResponse)
    }

    async fn cancel_session(
        &self,
        req: Request<pb::CancelSessionRequest>,
    ) -> Result<Response<pb::CancelSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check(input::id("session_id", &r.session_id));
        let reason = v.check(input::required_text("reason", &r.reason, MAX_TEXT_LEN));
        v.finish()?;
        let input = TransitionInput {
            etag: etag(&r.etag),
            reason: reason.unwrap_or_default(),
            ..Default::default()
        };
        command!(
            self,
            &who,
            "CancelSession",
            r,
            Command::Cancel,
            input,
            CancelSessionResponse
        )
    }

    async fn advance_stage(
        &self,
        req: Request<pb::AdvanceStageRequest>,
    ) -> Result<Response<pb::AdvanceStageResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.check(input::id("session_id", &r.session_id));
        let stage = v.check(input::label("stage", &r.stage));
        v.finish()?;
        let (Some(id), Some(stage)) = (id, stage) else {
            return Err(incomplete());
        };
        let mut m = begin_or_replay!(self, &who, "AdvanceStage", r);
        let s = self
            .app
            .advance_stage(&mut m.unit, &who, id, stage, etag(&r.etag).as_deref())
            .await?;
        m.finish(pb::AdvanceStageResponse {
            session: Some(s.into()),
        })
        .await
    }

    async fn create_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let mentee_id = v.check(input::id("mentee_id", &r.mentee_id));
        let listing_id = v.check(input::id("listing_id", &r.listing_id));
        let mentor_id = v.check(input::optional_id("mentor_id", &r.mentor_id));
        let overrides = match (&r.config, &r.config_mask) {
            (_, None) => Some(None),
            (config, Some(mask)) => v
                .check(convert::config_patch(
                    &config.clone().unwrap_or_default(),
                    &mask.paths,
                    "config",
                ))
                .map(|patch| Some((patch, mask.paths.clone()))),
        };
        v.finish()?;
        let (Some(mentee_id), Some(listing_id), Some(mentor_id), Some(overrides)) =
            (mentee_id, listing_id, mentor_id, overrides)
        else {
            return Err(incomplete());
        };
        let new = NewSession {
            mentee_id,
            listing_id,
            mentor_id,
            template_id: (!r.template_id.is_empty()).then(|| r.template_id.clone()),
            overrides,
        };
        let mut m = begin_or_replay!(self, &who, "CreateSession", r);
        let s = self.app.create_session(&mut m.unit, &who, new).await?;
        m.finish(pb::CreateSessionResponse {
            session: Some(s.into()),
        })
        .await
    }

    async fn get_session_config(
        &self,
        req: Request<pb::GetSessionConfigRequest>,
    ) -> Result<Response<pb::GetSessionConfigResponse>, Status> {
        let who = principal(&req)?;
        let id = input::id("session_id", &req.get_ref().session_id)?;
        let config = self.app.get_session_config(&who, id).await?;
        Ok(Response::new(pb::GetSessionConfigResponse {
            config: Some(convert::session_config(&config)),
        }))
    }

    async fn update_session_config(
        &self,
        req: Request<pb::UpdateSessionConfigRequest>,
    ) -> Result<Response<pb::UpdateSessionConfigResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.check(input::id("session_id", &r.session_id));
        let paths = r.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name at least one field");
        }
        let patch = v.check(convert::config_patch(
            &r.config.clone().unwrap_or_default(),
            &paths,
            "config",
        ));
        v.finish()?;
        let (Some(id), Some(patch)) = (id, patch) else {
            return Err(incomplete());
        };
        let mut m = begin_or_replay!(self, &who, "UpdateSessionConfig", r);
        let s = self
            .app
            .update_session_config(&mut m.unit, &who, id, patch, paths, etag(&r.etag).as_deref())
            .await?;
        m.finish(pb::UpdateSessionConfigResponse {
            session: Some(s.into()),
        })
        .await
    }

    async fn watch_session(
        &self,
        req: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<BoxStream<pb::WatchSessionResponse>>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let id = input::id("session_id", &r.session_id)?;
        let items = self.app.watch_session(&who, id, r.after_seq).await?;
        let stream = ReceiverStream::new(items).map(|item| {
            let item = match item? {
                SessionItem::Snapshot(s) => pb::watch_session_response::Item::Session((*s).into()),
                SessionItem::Event(e) => pb::watch_session_response::Item::Event(e.into()),
            };
            Ok(pb::WatchSessionResponse { item: Some(item) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch_sessions(
        &self,
        req: Request<pb::WatchSessionsRequest>,
    ) -> Result<Response<BoxStream<pb::WatchSessionsResponse>>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let mentor_id = v.check(input::optional_id("mentor_id", &r.mentor_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &r.mentee_id));
        let listing_id = v.check(input::optional_id("listing_id", &r.listing_id));
        let statuses = v.check(convert::session_statuses("statuses", &r.statuses));
        let cursor = (!r.cursor.is_empty()).then_some(r.cursor.as_str());
        if let Some(c) = cursor {
            v.check(decode_cursor(c));
        }
        v.finish()?;
        let (Some(mentor_id), Some(mentee_id), Some(listing_id), Some(statuses)) =
            (mentor_id, mentee_id, listing_id, statuses)
        else {
            return Err(incomplete());
        };
        let filter = FeedFilter {
            mentor_id,
            mentee_id,
            listing_id,
            statuses,
        };
        let items = self.app.watch_sessions(&who, filter, cursor).await?;
        let stream = ReceiverStream::new(items).map(|item| {
            let item = item?;
            Ok(pb::WatchSessionsResponse {
                event: Some(item.event.into()),
                cursor: item.cursor,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_config_templates(
        &self,
        req: Request<pb::ListConfigTemplatesRequest>,
    ) -> Result<Response<pb::ListConfigTemplatesResponse>, Status> {
        let who = principal(&req)?;
        let templates = self.app.list_config_templates(&who)?;
        Ok(Response::new(pb::ListConfigTemplatesResponse {
            templates: templates
                .iter()
                .map(|t| pb::ConfigTemplate {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    config: Some(convert::session_config(&t.config)),
                })
                .collect(),
        }))
    }

    async fn list_session_events(
        &self,
        req: Request<pb::ListSessionEventsRequest>,
    ) -> Result<Response<pb::ListSessionEventsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.check(input::id("session_id", &r.session_id));
        let size = v.check(input::page_size(r.page_size));
        v.finish()?;
        let (Some(id), Some(size)) = (id, size) else {
            return Err(incomplete());
        };
        let (events, next) = self.app.list_session_events(&who, id, size, &r.page_token).await?;
        Ok(Response::new(pb::ListSessionEventsResponse {
            events: events.into_iter().map(Into::into).collect(),
            next_page_token: next,
        }))
    }
}

/// `order_by`: "created_at" (default) or "start_time", optionally " desc" / " asc".
fn parse_order_by(raw: &str) -> Result<(SortField, bool), Error> {
    let mut parts = raw.split_whitespace();
    let field = match parts.next() {
        None | Some("created_at") => SortField::CreatedAt,
        Some("start_time") => SortField::StartTime,
        Some(other) => {
            return Err(Error::invalid(
                "order_by",
                format!("cannot sort by {other:?}; use created_at or start_time"),
            ));
        }
    };
    let descending = match parts.next() {
        None => raw.is_empty(),
        Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(Error::invalid(
                "order_by",
                format!("direction {other:?} is not asc or desc"),
            ));
        }
    };
    if parts.next().is_some() {
        return Err(Error::invalid("order_by", "expected `<field> [asc|desc]`"));
    }
    Ok((field, descending))
}

/// A completion report as stored: summary, optional score 0-100, data.
fn report_json(r: &pb::SessionReport) -> Result<serde_json::Value, Error> {
    let mut v = Violations::new();
    let summary = v.check(input::optional_text("report.summary", &r.summary, MAX_TEXT_LEN));
    if let Some(score) = r.overall_score
        && !(0..=100).contains(&score)
    {
        v.add("report.overall_score", "must be between 0 and 100");
    }
    let data = r.data.as_ref().map(convert::struct_to_json);
    if let Some(d) = &data
        && d.to_string().len() > 64 * 1024
    {
        v.add("report.data", "must be at most 64 KiB encoded");
    }
    v.finish()?;
    Ok(serde_json::json!({
        "summary": summary.unwrap_or_default(),
        "overall_score": r.overall_score,
        "data": data.unwrap_or_else(|| serde_json::json!({})),
    }))
}
