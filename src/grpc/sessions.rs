//! SessionService: handlers of a few lines each, and the parser of each
//! request.

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, codegen::BoxStream};

use super::{Api, Parse, convert, mutating, pb};
use crate::app::watch::{SessionItem, decode_cursor, encode_cursor};
use crate::domain::{
    Result, Violations,
    command::{CheckIn, ConfigUpdate, NewSession, NotesUpdate, Reassignment, StageChange, Transition},
    config::MAX_MASK_PATHS,
    input::{self, MAX_TEXT_LEN},
    query::{
        ExportFormat, ExportQuery, FeedWatch, ListFilter, LogQuery, ParticipantFilter, SessionQuery, SessionWatch,
        SortField,
    },
    report,
    session::{Command, Requester},
};

mutating!(
    pb::CreateSessionRequest,
    pb::StartSessionRequest,
    pb::PauseSessionRequest,
    pb::ResumeSessionRequest,
    pb::CompleteSessionRequest,
    pb::FailSessionRequest,
    pb::CancelSessionRequest,
    pb::AdvanceStageRequest,
    pb::RecordCheckInRequest,
    pb::UpdateSessionConfigRequest,
    pb::ReassignMentorRequest,
    pb::UpdateSessionNotesRequest,
);

/// The response of every session command: `{ Session session = 1; }`.
macro_rules! session_command {
    ($api:expr, $req:expr, $response:ident) => {
        $api.mutate($req, async |app, unit, who, t| {
            let session = app.transition(unit, Requester::Caller(who), t).await?;
            Ok(pb::$response {
                session: Some(session.into()),
            })
        })
        .await
    };
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for Api {
    type ExportSessionsStream = BoxStream<pb::ExportSessionsResponse>;
    type WatchSessionStream = BoxStream<pb::WatchSessionResponse>;
    type WatchSessionsStream = BoxStream<pb::WatchSessionsResponse>;

    async fn create_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        self.mutate(req, async |app, unit, who, new| {
            let session = app.create_session(unit, who, new).await?;
            Ok(pb::CreateSessionResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn batch_get_sessions(
        &self,
        req: Request<pb::BatchGetSessionsRequest>,
    ) -> Result<Response<pb::BatchGetSessionsResponse>, Status> {
        self.read(req, async |app, who, ids| {
            let sessions = app.batch_get_sessions(&who, ids).await?;
            Ok(pb::BatchGetSessionsResponse {
                sessions: sessions.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }

    async fn update_session_notes(
        &self,
        req: Request<pb::UpdateSessionNotesRequest>,
    ) -> Result<Response<pb::UpdateSessionNotesResponse>, Status> {
        self.mutate(req, async |app, unit, who, u| {
            let session = app.update_session_notes(unit, who, u).await?;
            Ok(pb::UpdateSessionNotesResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        self.read(req, async |app, who, id| {
            let session = app.get_session(&who, id).await?;
            Ok(pb::GetSessionResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.read(req, async |app, who, query| {
            let (sessions, next, total) = app.list_sessions(&who, query).await?;
            Ok(pb::ListSessionsResponse {
                sessions: sessions.into_iter().map(Into::into).collect(),
                next_page_token: next,
                total_size: total.map_or(0, |t| i32::try_from(t).unwrap_or(i32::MAX)),
            })
        })
        .await
    }

    async fn start_session(
        &self,
        req: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        session_command!(self, req, StartSessionResponse)
    }

    async fn pause_session(
        &self,
        req: Request<pb::PauseSessionRequest>,
    ) -> Result<Response<pb::PauseSessionResponse>, Status> {
        session_command!(self, req, PauseSessionResponse)
    }

    async fn resume_session(
        &self,
        req: Request<pb::ResumeSessionRequest>,
    ) -> Result<Response<pb::ResumeSessionResponse>, Status> {
        session_command!(self, req, ResumeSessionResponse)
    }

    async fn complete_session(
        &self,
        req: Request<pb::CompleteSessionRequest>,
    ) -> Result<Response<pb::CompleteSessionResponse>, Status> {
        session_command!(self, req, CompleteSessionResponse)
    }

    async fn fail_session(
        &self,
        req: Request<pb::FailSessionRequest>,
    ) -> Result<Response<pb::FailSessionResponse>, Status> {
        session_command!(self, req, FailSessionResponse)
    }

    async fn cancel_session(
        &self,
        req: Request<pb::CancelSessionRequest>,
    ) -> Result<Response<pb::CancelSessionResponse>, Status> {
        session_command!(self, req, CancelSessionResponse)
    }

    async fn advance_stage(
        &self,
        req: Request<pb::AdvanceStageRequest>,
    ) -> Result<Response<pb::AdvanceStageResponse>, Status> {
        self.mutate(req, async |app, unit, who, change| {
            let session = app.advance_stage(unit, who, change).await?;
            Ok(pb::AdvanceStageResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn record_check_in(
        &self,
        req: Request<pb::RecordCheckInRequest>,
    ) -> Result<Response<pb::RecordCheckInResponse>, Status> {
        self.mutate(req, async |app, unit, who, check_in| {
            let session = app.record_check_in(unit, who, check_in).await?;
            Ok(pb::RecordCheckInResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn list_session_events(
        &self,
        req: Request<pb::ListSessionEventsRequest>,
    ) -> Result<Response<pb::ListSessionEventsResponse>, Status> {
        self.read(req, async |app, who, query| {
            let (events, next) = app.list_session_events(&who, query).await?;
            Ok(pb::ListSessionEventsResponse {
                events: events.into_iter().map(Into::into).collect(),
                next_page_token: next,
            })
        })
        .await
    }

    async fn get_session_timeline(
        &self,
        req: Request<pb::GetSessionTimelineRequest>,
    ) -> Result<Response<pb::GetSessionTimelineResponse>, Status> {
        self.read(req, async |app, who, id| {
            Ok(app.session_timeline(&who, id).await?.into())
        })
        .await
    }

    async fn compare_sessions(
        &self,
        req: Request<pb::CompareSessionsRequest>,
    ) -> Result<Response<pb::CompareSessionsResponse>, Status> {
        self.read(req, async |app, who, ids| {
            let (first, second, differences) = app.compare_sessions(&who, ids).await?;
            Ok(pb::CompareSessionsResponse {
                first: Some(first.into()),
                second: Some(second.into()),
                config_differences: differences.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }

    async fn export_sessions(
        &self,
        req: Request<pb::ExportSessionsRequest>,
    ) -> Result<Response<BoxStream<pb::ExportSessionsResponse>>, Status> {
        self.read(req, async |app, who, query| {
            let chunks = app.export_sessions(&who, query).await?;
            let stream = chunks.map(|chunk| Ok(pb::ExportSessionsResponse { chunk: chunk? }));
            Ok(Box::pin(stream) as BoxStream<_>)
        })
        .await
    }

    async fn get_session_config(
        &self,
        req: Request<pb::GetSessionConfigRequest>,
    ) -> Result<Response<pb::GetSessionConfigResponse>, Status> {
        self.read(req, async |app, who, id| {
            let config = app.get_session(&who, id).await?.config;
            Ok(pb::GetSessionConfigResponse {
                config: Some(convert::session_config(&config)),
            })
        })
        .await
    }

    async fn update_session_config(
        &self,
        req: Request<pb::UpdateSessionConfigRequest>,
    ) -> Result<Response<pb::UpdateSessionConfigResponse>, Status> {
        self.mutate(req, async |app, unit, who, update| {
            let session = app.update_session_config(unit, who, update).await?;
            Ok(pb::UpdateSessionConfigResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn list_config_templates(
        &self,
        req: Request<pb::ListConfigTemplatesRequest>,
    ) -> Result<Response<pb::ListConfigTemplatesResponse>, Status> {
        self.read(req, async |app, _, ()| {
            Ok(pb::ListConfigTemplatesResponse {
                templates: app.rules.templates.iter().map(Into::into).collect(),
            })
        })
        .await
    }

    async fn reassign_mentor(
        &self,
        req: Request<pb::ReassignMentorRequest>,
    ) -> Result<Response<pb::ReassignMentorResponse>, Status> {
        self.mutate(req, async |app, unit, who, r| {
            let session = app.reassign_mentor(unit, who, r).await?;
            Ok(pb::ReassignMentorResponse {
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn list_mentor_assignments(
        &self,
        req: Request<pb::ListMentorAssignmentsRequest>,
    ) -> Result<Response<pb::ListMentorAssignmentsResponse>, Status> {
        self.read(req, async |app, who, query| {
            let (assignments, next) = app.list_mentor_assignments(&who, query).await?;
            Ok(pb::ListMentorAssignmentsResponse {
                assignments: assignments.into_iter().map(Into::into).collect(),
                next_page_token: next,
            })
        })
        .await
    }

    async fn get_queue_status(
        &self,
        req: Request<pb::GetQueueStatusRequest>,
    ) -> Result<Response<pb::GetQueueStatusResponse>, Status> {
        self.read(req, async |app, _, ()| {
            let q = app.queue_status().await?;
            let count = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
            Ok(pb::GetQueueStatusResponse {
                total_queued: count(q.total_queued),
                active_session_count: count(q.active_session_count),
                max_concurrent_sessions: count(q.max_concurrent_sessions),
                estimated_wait: Some(convert::duration(q.estimated_wait)),
                p95_queue_wait: q.p95_queue_wait.map(convert::duration),
            })
        })
        .await
    }

    async fn watch_session(
        &self,
        req: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<BoxStream<pb::WatchSessionResponse>>, Status> {
        self.read(req, async |app, who, watch| {
            let items = app.watch_session(&who, watch).await?;
            let stream = items.map(|item| {
                let item = match item? {
                    SessionItem::Snapshot(s) => pb::watch_session_response::Item::Session((*s).into()),
                    SessionItem::Event(e) => pb::watch_session_response::Item::Event(e.into()),
                };
                Ok(pb::WatchSessionResponse { item: Some(item) })
            });
            Ok(Box::pin(stream) as BoxStream<_>)
        })
        .await
    }

    async fn watch_sessions(
        &self,
        req: Request<pb::WatchSessionsRequest>,
    ) -> Result<Response<BoxStream<pb::WatchSessionsResponse>>, Status> {
        self.read(req, async |app, who, watch| {
            let announce = watch.send_start_position;
            let (start, items) = app.watch_sessions(&who, watch).await?;
            let start = announce.then(|| {
                Ok(pb::WatchSessionsResponse {
                    event: None,
                    cursor: encode_cursor(start),
                })
            });
            let stream = items.map(|item| {
                let item = item?;
                Ok(pb::WatchSessionsResponse {
                    event: Some(item.event.into()),
                    cursor: encode_cursor(item.position),
                })
            });
            Ok(Box::pin(futures_util::stream::iter(start).chain(stream)) as BoxStream<_>)
        })
        .await
    }
}

/// An etag field: empty means "any version".
fn expected_etag(raw: &str) -> Option<String> {
    (!raw.is_empty()).then(|| raw.to_owned())
}

impl Parse for pb::CreateSessionRequest {
    type Parsed = NewSession;
    fn parse(&self) -> Result<NewSession> {
        let mut v = Violations::new();
        let mentee_id = v.check(input::id("mentee_id", &self.mentee_id));
        let listing_id = v.check(input::id("listing_id", &self.listing_id));
        let mentor_id = v.check(input::optional_id("mentor_id", &self.mentor_id));
        let overrides = match &self.config_mask {
            None => Some(None),
            Some(mask) => v
                .check(input::at_most("config_mask", mask.paths.len(), MAX_MASK_PATHS))
                .and_then(|()| {
                    v.check(convert::config_patch(
                        self.config.as_ref().unwrap_or(&pb::SessionConfig::default()),
                        &mask.paths,
                        "config",
                    ))
                })
                .map(|patch| Some((patch, mask.paths.clone()))),
        };
        let new = (|| {
            Some(NewSession {
                mentee_id: mentee_id?,
                listing_id: listing_id?,
                mentor_id: mentor_id?,
                template_id: (!self.template_id.is_empty()).then(|| self.template_id.clone()),
                overrides: overrides?,
            })
        })();
        v.into_result(new)
    }
}

impl Parse for pb::BatchGetSessionsRequest {
    type Parsed = Vec<uuid::Uuid>;
    fn parse(&self) -> Result<Vec<uuid::Uuid>> {
        input::batch_ids("session_ids", &self.session_ids)
    }
}

/// The most characters a session's notes hold.
pub const MAX_NOTES_CHARS: usize = 10_000;

impl Parse for pb::UpdateSessionNotesRequest {
    type Parsed = NotesUpdate;
    fn parse(&self) -> Result<NotesUpdate> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let paths = self.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name notes, metadata or both");
        }
        v.check(input::at_most("update_mask", paths.len(), MAX_MASK_PATHS));
        for path in paths.iter().take(MAX_MASK_PATHS) {
            if path != "notes" && path != "metadata" {
                v.add(
                    "update_mask",
                    format!(
                        "{:?} is not a field UpdateSessionNotes changes (notes, metadata)",
                        input::truncate(path)
                    ),
                );
            }
        }
        let named = |p: &str| paths.iter().any(|x| x == p);
        let notes = if named("notes") {
            v.check(input::optional_text("notes", &self.notes, MAX_NOTES_CHARS))
                .map(Some)
        } else {
            Some(None)
        };
        let metadata = if named("metadata") {
            let map = convert::struct_to_map(self.metadata.as_ref());
            v.check(input::json_object("metadata", &map, report::MAX_DETAILS_BYTES))
                .map(|()| Some(serde_json::Value::Object(map)))
        } else {
            Some(None)
        };
        let u = (|| {
            Some(NotesUpdate {
                session_id: session_id?,
                notes: notes?,
                metadata: metadata?,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(u)
    }
}

impl Parse for pb::GetSessionRequest {
    type Parsed = uuid::Uuid;
    fn parse(&self) -> Result<uuid::Uuid> {
        input::id("session_id", &self.session_id)
    }
}

impl Parse for pb::GetSessionTimelineRequest {
    type Parsed = uuid::Uuid;
    fn parse(&self) -> Result<uuid::Uuid> {
        input::id("session_id", &self.session_id)
    }
}

impl Parse for pb::CompareSessionsRequest {
    type Parsed = (uuid::Uuid, uuid::Uuid);
    fn parse(&self) -> Result<(uuid::Uuid, uuid::Uuid)> {
        let mut v = Violations::new();
        let first = v.check(input::id("first_session_id", &self.first_session_id));
        let second = v.check(input::id("second_session_id", &self.second_session_id));
        v.into_result(first.zip(second))
    }
}

impl Parse for pb::GetSessionConfigRequest {
    type Parsed = uuid::Uuid;
    fn parse(&self) -> Result<uuid::Uuid> {
        input::id("session_id", &self.session_id)
    }
}

impl Parse for pb::ReassignMentorRequest {
    type Parsed = Reassignment;
    fn parse(&self) -> Result<Reassignment> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let mentor_id = v.check(input::id("mentor_id", &self.mentor_id));
        let reason = v.check(input::required_text("reason", &self.reason, MAX_TEXT_LEN));
        let r = (|| {
            Some(Reassignment {
                session_id: session_id?,
                mentor_id: mentor_id?,
                reason: reason?,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(r)
    }
}

impl Parse for pb::ListMentorAssignmentsRequest {
    type Parsed = LogQuery;
    fn parse(&self) -> Result<LogQuery> {
        convert::log_query("session_id", &self.session_id, self.page_size, &self.page_token)
    }
}

impl Parse for pb::GetQueueStatusRequest {
    type Parsed = ();
    fn parse(&self) -> Result<()> {
        Ok(())
    }
}

impl Parse for pb::ListConfigTemplatesRequest {
    type Parsed = ();
    fn parse(&self) -> Result<()> {
        Ok(())
    }
}

/// The filter fields ListSessions and ExportSessions share.
struct SessionFilterFields<'a> {
    mentee_id: &'a str,
    mentor_id: &'a str,
    listing_id: &'a str,
    statuses: &'a [i32],
    start_time_from: Option<&'a prost_types::Timestamp>,
    start_time_to: Option<&'a prost_types::Timestamp>,
}

impl SessionFilterFields<'_> {
    /// The filter in the order `order` parses (after the fields, so
    /// violations are listed in field order); every problem is added to `v`.
    fn parse(
        &self,
        order: impl FnOnce(&mut Violations) -> Option<(SortField, bool)>,
        v: &mut Violations,
    ) -> Option<ListFilter> {
        let mentee_id = v.check(input::optional_id("mentee_id", self.mentee_id));
        let mentor_id = v.check(input::optional_id("mentor_id", self.mentor_id));
        let listing_id = v.check(input::optional_id("listing_id", self.listing_id));
        let statuses = v.check(convert::session_statuses("statuses", self.statuses));
        let start_from = v.check(convert::opt_time("start_time_from", self.start_time_from));
        let start_to = v.check(convert::opt_time("start_time_to", self.start_time_to));
        let (sort, descending) = order(v)?;
        Some(ListFilter {
            participants: ParticipantFilter {
                mentee_id: mentee_id?,
                mentor_id: mentor_id?,
                listing_id: listing_id?,
                statuses: statuses?,
            },
            start_from: start_from?,
            start_to: start_to?,
            sort,
            descending,
        })
    }
}

impl Parse for pb::ListSessionsRequest {
    type Parsed = SessionQuery;
    fn parse(&self) -> Result<SessionQuery> {
        let mut v = Violations::new();
        let page = v.check(convert::page(self.page_size, &self.page_token));
        let filter = SessionFilterFields {
            mentee_id: &self.mentee_id,
            mentor_id: &self.mentor_id,
            listing_id: &self.listing_id,
            statuses: &self.statuses,
            start_time_from: self.start_time_from.as_ref(),
            start_time_to: self.start_time_to.as_ref(),
        }
        .parse(|v| v.check(convert::order_by(&self.order_by)), &mut v);
        let query = (|| {
            Some(SessionQuery {
                filter: filter?,
                page: page?,
                with_total: self.include_total_size,
            })
        })();
        v.into_result(query)
    }
}

impl Parse for pb::ExportSessionsRequest {
    type Parsed = ExportQuery;
    fn parse(&self) -> Result<ExportQuery> {
        let mut v = Violations::new();
        let filter = SessionFilterFields {
            mentee_id: &self.mentee_id,
            mentor_id: &self.mentor_id,
            listing_id: &self.listing_id,
            statuses: &self.statuses,
            start_time_from: self.start_time_from.as_ref(),
            start_time_to: self.start_time_to.as_ref(),
        }
        .parse(|_| Some((SortField::CreatedAt, false)), &mut v);
        let format = match pb::ExportFormat::try_from(self.format) {
            Ok(pb::ExportFormat::Unspecified) => Some(None),
            Ok(pb::ExportFormat::Csv) => Some(Some(ExportFormat::Csv)),
            Ok(pb::ExportFormat::JsonLines) => Some(Some(ExportFormat::JsonLines)),
            Err(_) => {
                v.add("format", format!("{} is not an export format", self.format));
                None
            }
        };
        let query = (|| {
            Some(ExportQuery {
                filter: filter?,
                format: format?,
            })
        })();
        v.into_result(query)
    }
}

/// A session id and the other fields of a session command.
fn parse_command(session_id: &str, command: Command, etag_raw: &str, v: &mut Violations) -> Option<Transition> {
    let id = v.check(input::id("session_id", session_id))?;
    Some(Transition {
        etag: expected_etag(etag_raw),
        ..Transition::new(id, command)
    })
}

impl Parse for pb::StartSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Start, &self.etag, &mut v);
        v.into_result(t)
    }
}

impl Parse for pb::ResumeSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Resume, &self.etag, &mut v);
        v.into_result(t)
    }
}

impl Parse for pb::PauseSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Pause, &self.etag, &mut v);
        let reason = v.check(input::optional_text("reason", &self.reason, MAX_TEXT_LEN));
        v.into_result((|| Some(Transition { reason: reason?, ..t? }))())
    }
}

impl Parse for pb::CompleteSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Complete, &self.etag, &mut v);
        let report = match &self.report {
            None => Some(None),
            Some(r) => {
                // The summary and the rest are checked apart, so every problem is reported.
                let summary = v.check(input::optional_text("report.summary", &r.summary, MAX_TEXT_LEN));
                let report = v.check(report::report(
                    summary.clone().unwrap_or_default(),
                    r.overall_score,
                    convert::struct_to_map(r.data.as_ref()),
                ));
                summary.and(report).map(Some)
            }
        };
        v.into_result((|| Some(Transition { report: report?, ..t? }))())
    }
}

impl Parse for pb::FailSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Fail, &self.etag, &mut v);
        let message = v.check(input::required_text("error_message", &self.error_message, MAX_TEXT_LEN));
        let failure = v.check(report::failure(
            message.as_deref().unwrap_or_default(),
            convert::struct_to_map(self.details.as_ref()),
        ));
        v.into_result((|| {
            Some(Transition {
                failure: Some(failure?),
                reason: message?,
                ..t?
            })
        })())
    }
}

impl Parse for pb::CancelSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Cancel, &self.etag, &mut v);
        let reason = v.check(input::required_text("reason", &self.reason, MAX_TEXT_LEN));
        v.into_result((|| Some(Transition { reason: reason?, ..t? }))())
    }
}

impl Parse for pb::AdvanceStageRequest {
    type Parsed = StageChange;
    fn parse(&self) -> Result<StageChange> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let stage = v.check(input::label("stage", &self.stage));
        let change = (|| {
            Some(StageChange {
                session_id: session_id?,
                stage: stage?,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(change)
    }
}

impl Parse for pb::RecordCheckInRequest {
    type Parsed = CheckIn;
    fn parse(&self) -> Result<CheckIn> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let note = v.check(input::optional_text("note", &self.note, CheckIn::MAX_NOTE));
        let check_in = (|| {
            Some(CheckIn {
                session_id: session_id?,
                note: note?,
                blocker: self.blocker,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(check_in)
    }
}

impl Parse for pb::ListSessionEventsRequest {
    type Parsed = LogQuery;
    fn parse(&self) -> Result<LogQuery> {
        convert::log_query("session_id", &self.session_id, self.page_size, &self.page_token)
    }
}

impl Parse for pb::UpdateSessionConfigRequest {
    type Parsed = ConfigUpdate;
    fn parse(&self) -> Result<ConfigUpdate> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let paths = self
            .update_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name at least one field");
        }
        let patch = v
            .check(input::at_most("update_mask", paths.len(), MAX_MASK_PATHS))
            .and_then(|()| {
                v.check(convert::config_patch(
                    self.config.as_ref().unwrap_or(&pb::SessionConfig::default()),
                    paths,
                    "config",
                ))
            });
        let update = (|| {
            Some(ConfigUpdate {
                session_id: session_id?,
                patch: patch?,
                paths: paths.to_vec(),
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(update)
    }
}

impl Parse for pb::WatchSessionRequest {
    type Parsed = SessionWatch;
    fn parse(&self) -> Result<SessionWatch> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        if self.after_seq.is_some_and(|s| s < 0) {
            v.add("after_seq", "must not be negative");
        }
        let watch = (|| {
            Some(SessionWatch {
                session_id: session_id?,
                after_seq: self.after_seq,
            })
        })();
        v.into_result(watch)
    }
}

impl Parse for pb::WatchSessionsRequest {
    type Parsed = FeedWatch;
    fn parse(&self) -> Result<FeedWatch> {
        let mut v = Violations::new();
        let mentor_id = v.check(input::optional_id("mentor_id", &self.mentor_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &self.mentee_id));
        let listing_id = v.check(input::optional_id("listing_id", &self.listing_id));
        let statuses = v.check(convert::session_statuses("statuses", &self.statuses));
        let cursor = if self.cursor.is_empty() {
            Some(None)
        } else {
            v.check(decode_cursor(&self.cursor)).map(Some)
        };
        let watch = (|| {
            Some(FeedWatch {
                filter: ParticipantFilter {
                    mentor_id: mentor_id?,
                    mentee_id: mentee_id?,
                    listing_id: listing_id?,
                    statuses: statuses?,
                },
                cursor: cursor?,
                send_start_position: self.send_start_position,
            })
        })();
        v.into_result(watch)
    }
}
