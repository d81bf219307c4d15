//! SessionService handlers. RPCs not listed here answer UNIMPLEMENTED
//! (generated default stubs) until their issue lands.

use tonic::{Request, Response, Status};

use super::{Api, auth::principal, convert, incomplete, pb};
use crate::app::sessions::TransitionInput;
use crate::domain::{
    Error, Violations,
    input::{self, MAX_TEXT_LEN},
    session::{Command, Requester},
};
use crate::store::sessions::{SessionFilter, SortField};

fn etag(raw: &str) -> Option<String> {
    (!raw.is_empty()).then(|| raw.to_owned())
}

impl Api {
    async fn run(
        &self,
        who: &crate::domain::access::Principal,
        session_id: &str,
        command: Command,
        input: TransitionInput,
    ) -> Result<pb::Session, Status> {
        let id = input::id("session_id", session_id)?;
        let session = self.app.transition(Requester::Caller(who), id, command, input).await?;
        Ok(session.into())
    }
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
            mentee_id,
            mentor_id,
            listing_id,
            statuses,
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
        let session = self.run(&who, &r.session_id, Command::Start, input).await?;
        Ok(Response::new(pb::StartSessionResponse { session: Some(session) }))
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
        let session = self.run(&who, &r.session_id, Command::Complete, input).await?;
        Ok(Response::new(pb::CompleteSessionResponse { session: Some(session) }))
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
