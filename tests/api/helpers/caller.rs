//! [`Caller`]: one helper per RPC, for one caller on one replica.

use mentorship::grpc::pb::{
    self, booking_service_client::BookingServiceClient, directory_service_client::DirectoryServiceClient,
    session_service_client::SessionServiceClient,
};
use tonic::{Request, Status, Streaming, transport::Channel};

use super::*;

/// One helper per RPC, for one caller on one replica. Requests that carry an
/// etag or request id take them from [`Caller::with_etag`] and
/// [`Caller::with_request_id`]; responses come back unwrapped.
#[derive(Clone)]
pub struct Caller {
    channel: Channel,
    token: String,
    etag: String,
    request_id: String,
    timeout: Option<std::time::Duration>,
    directory: DirectoryServiceClient<Channel>,
    bookings: BookingServiceClient<Channel>,
    sessions: SessionServiceClient<Channel>,
}

impl Caller {
    pub fn new(channel: &Channel, token: &str) -> Caller {
        Caller {
            channel: channel.clone(),
            token: token.to_owned(),
            etag: String::new(),
            request_id: String::new(),
            timeout: None,
            directory: DirectoryServiceClient::new(channel.clone()),
            bookings: BookingServiceClient::new(channel.clone()),
            sessions: SessionServiceClient::new(channel.clone()),
        }
    }

    /// Sends this etag with session commands.
    pub fn with_etag(mut self, etag: &str) -> Caller {
        self.etag = etag.to_owned();
        self
    }

    /// Sends this request id with mutations.
    pub fn with_request_id(mut self, request_id: &str) -> Caller {
        self.request_id = request_id.to_owned();
        self
    }

    /// Sends a deadline (`grpc-timeout`) with every call.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Caller {
        self.timeout = Some(timeout);
        self
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = authed(&self.token, msg);
        if let Some(timeout) = self.timeout {
            req.set_timeout(timeout);
        }
        req
    }

    /// Any unary RPC, by its request alone (`pb::Rpc` is generated for
    /// every method): a new RPC can be tested before it has a helper below.
    pub async fn call<R: pb::Rpc>(&self, request: R) -> Result<R::Response, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(R::PATH);
        let codec = tonic_prost::ProstCodec::<R, R::Response>::default();
        Ok(grpc.unary(self.req(request), path, codec).await?.into_inner())
    }

    // DirectoryService.

    pub async fn upsert_mentee(&self, mentee: pb::Mentee) -> Result<pb::Mentee, Status> {
        let req = pb::UpsertMenteeRequest {
            mentee: Some(mentee),
            request_id: self.request_id.clone(),
        };
        let r = self.directory.clone().upsert_mentee(self.req(req)).await?;
        Ok(r.into_inner().mentee.expect("mentee"))
    }

    pub async fn get_mentee(&self, id: &str) -> Result<pb::Mentee, Status> {
        let req = pb::GetMenteeRequest { mentee_id: id.into() };
        let r = self.directory.clone().get_mentee(self.req(req)).await?;
        Ok(r.into_inner().mentee.expect("mentee"))
    }

    pub async fn upsert_mentor(&self, mentor: pb::Mentor) -> Result<pb::Mentor, Status> {
        let req = pb::UpsertMentorRequest {
            mentor: Some(mentor),
            request_id: self.request_id.clone(),
        };
        let r = self.directory.clone().upsert_mentor(self.req(req)).await?;
        Ok(r.into_inner().mentor.expect("mentor"))
    }

    pub async fn get_mentor(&self, id: &str) -> Result<pb::Mentor, Status> {
        let req = pb::GetMentorRequest { mentor_id: id.into() };
        let r = self.directory.clone().get_mentor(self.req(req)).await?;
        Ok(r.into_inner().mentor.expect("mentor"))
    }

    pub async fn list_mentors(&self, req: pb::ListMentorsRequest) -> Result<pb::ListMentorsResponse, Status> {
        Ok(self.directory.clone().list_mentors(self.req(req)).await?.into_inner())
    }

    pub async fn upsert_listing(&self, listing: pb::Listing) -> Result<pb::Listing, Status> {
        let req = pb::UpsertListingRequest {
            listing: Some(listing),
            request_id: self.request_id.clone(),
        };
        let r = self.directory.clone().upsert_listing(self.req(req)).await?;
        Ok(r.into_inner().listing.expect("listing"))
    }

    pub async fn get_listing(&self, id: &str) -> Result<pb::Listing, Status> {
        let req = pb::GetListingRequest { listing_id: id.into() };
        let r = self.directory.clone().get_listing(self.req(req)).await?;
        Ok(r.into_inner().listing.expect("listing"))
    }

    pub async fn list_listings(&self, req: pb::ListListingsRequest) -> Result<pb::ListListingsResponse, Status> {
        Ok(self.directory.clone().list_listings(self.req(req)).await?.into_inner())
    }

    // BookingService.

    pub async fn create_booking(&self, req: pb::CreateBookingRequest) -> Result<pb::Booking, Status> {
        let req = pb::CreateBookingRequest {
            request_id: self.request_id.clone(),
            ..req
        };
        let r = self.bookings.clone().create_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    pub async fn get_booking(&self, id: &str) -> Result<pb::Booking, Status> {
        let req = pb::GetBookingRequest { booking_id: id.into() };
        let r = self.bookings.clone().get_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    pub async fn list_bookings(&self, req: pb::ListBookingsRequest) -> Result<pb::ListBookingsResponse, Status> {
        Ok(self.bookings.clone().list_bookings(self.req(req)).await?.into_inner())
    }

    pub async fn accept_booking(&self, id: &str) -> Result<pb::AcceptBookingResponse, Status> {
        let req = pb::AcceptBookingRequest {
            booking_id: id.into(),
            request_id: self.request_id.clone(),
        };
        Ok(self.bookings.clone().accept_booking(self.req(req)).await?.into_inner())
    }

    pub async fn decline_booking(&self, id: &str, reason: &str) -> Result<pb::Booking, Status> {
        let req = pb::DeclineBookingRequest {
            booking_id: id.into(),
            reason: reason.into(),
            request_id: self.request_id.clone(),
        };
        let r = self.bookings.clone().decline_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    pub async fn cancel_booking(&self, id: &str, reason: &str) -> Result<pb::Booking, Status> {
        let req = pb::CancelBookingRequest {
            booking_id: id.into(),
            reason: reason.into(),
            request_id: self.request_id.clone(),
        };
        let r = self.bookings.clone().cancel_booking(self.req(req)).await?;
        Ok(r.into_inner().booking.expect("booking"))
    }

    // SessionService.

    pub async fn create_session(&self, req: pb::CreateSessionRequest) -> Result<pb::Session, Status> {
        let req = pb::CreateSessionRequest {
            request_id: self.request_id.clone(),
            ..req
        };
        let r = self.sessions.clone().create_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn get_session(&self, id: &str) -> Result<pb::Session, Status> {
        let req = pb::GetSessionRequest { session_id: id.into() };
        let r = self.sessions.clone().get_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn list_sessions(&self, req: pb::ListSessionsRequest) -> Result<pb::ListSessionsResponse, Status> {
        Ok(self.sessions.clone().list_sessions(self.req(req)).await?.into_inner())
    }

    pub async fn start_session(&self, id: &str) -> Result<pb::Session, Status> {
        let req = pb::StartSessionRequest {
            session_id: id.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().start_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn pause_session(&self, id: &str, reason: &str) -> Result<pb::Session, Status> {
        let req = pb::PauseSessionRequest {
            session_id: id.into(),
            reason: reason.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().pause_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn resume_session(&self, id: &str) -> Result<pb::Session, Status> {
        let req = pb::ResumeSessionRequest {
            session_id: id.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().resume_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn complete_session(&self, id: &str, report: Option<pb::SessionReport>) -> Result<pb::Session, Status> {
        let req = pb::CompleteSessionRequest {
            session_id: id.into(),
            report,
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().complete_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn fail_session(
        &self,
        id: &str,
        error_message: &str,
        details: Option<prost_types::Struct>,
    ) -> Result<pb::Session, Status> {
        let req = pb::FailSessionRequest {
            session_id: id.into(),
            error_message: error_message.into(),
            details,
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().fail_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn cancel_session(&self, id: &str, reason: &str) -> Result<pb::Session, Status> {
        let req = pb::CancelSessionRequest {
            session_id: id.into(),
            reason: reason.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().cancel_session(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn advance_stage(&self, id: &str, stage: &str) -> Result<pb::Session, Status> {
        let req = pb::AdvanceStageRequest {
            session_id: id.into(),
            stage: stage.into(),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().advance_stage(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn record_check_in(&self, id: &str, note: &str, blocker: bool) -> Result<pb::Session, Status> {
        let req = pb::RecordCheckInRequest {
            session_id: id.into(),
            note: note.into(),
            blocker,
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        Ok(self.call(req).await?.session.expect("session"))
    }

    pub async fn list_session_events(
        &self,
        id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListSessionEventsResponse, Status> {
        let req = pb::ListSessionEventsRequest {
            session_id: id.into(),
            page_size,
            page_token: page_token.into(),
        };
        Ok(self
            .sessions
            .clone()
            .list_session_events(self.req(req))
            .await?
            .into_inner())
    }

    pub async fn get_session_config(&self, id: &str) -> Result<pb::SessionConfig, Status> {
        let req = pb::GetSessionConfigRequest { session_id: id.into() };
        let r = self.sessions.clone().get_session_config(self.req(req)).await?;
        Ok(r.into_inner().config.expect("config"))
    }

    pub async fn update_session_config(
        &self,
        id: &str,
        config: pb::SessionConfig,
        paths: &[&str],
    ) -> Result<pb::Session, Status> {
        let req = pb::UpdateSessionConfigRequest {
            session_id: id.into(),
            config: Some(config),
            update_mask: Some(mask(paths)),
            etag: self.etag.clone(),
            request_id: self.request_id.clone(),
        };
        let r = self.sessions.clone().update_session_config(self.req(req)).await?;
        Ok(r.into_inner().session.expect("session"))
    }

    pub async fn list_config_templates(&self) -> Result<Vec<pb::ConfigTemplate>, Status> {
        let req = pb::ListConfigTemplatesRequest {};
        let r = self.sessions.clone().list_config_templates(self.req(req)).await?;
        Ok(r.into_inner().templates)
    }

    pub async fn watch_session(
        &self,
        id: &str,
        after_seq: Option<i64>,
    ) -> Result<Streaming<pb::WatchSessionResponse>, Status> {
        let req = pb::WatchSessionRequest {
            session_id: id.into(),
            after_seq,
        };
        Ok(self.sessions.clone().watch_session(self.req(req)).await?.into_inner())
    }

    pub async fn watch_sessions(
        &self,
        req: pb::WatchSessionsRequest,
    ) -> Result<Streaming<pb::WatchSessionsResponse>, Status> {
        Ok(self.sessions.clone().watch_sessions(self.req(req)).await?.into_inner())
    }
}

/// A FieldMask of `paths`.
pub fn mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}
