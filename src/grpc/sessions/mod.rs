//! SessionService: handlers of a few lines each; the parser of each
//! request is beside them (`parse.rs`).

mod parse;

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
