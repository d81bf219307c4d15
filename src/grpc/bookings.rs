//! BookingService: handlers of a few lines each, and the parser of each request.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Api, Parse, convert, mutating, pb};
use crate::domain::{
    Result, Violations,
    command::{CloseBooking, NewBooking},
    input::{self, MAX_TEXT_LEN},
    query::{BookingQuery, LogQuery, ParticipantFilter},
};

mutating!(
    pb::CreateBookingRequest,
    pb::AcceptBookingRequest,
    pb::DeclineBookingRequest,
    pb::CancelBookingRequest,
);

#[tonic::async_trait]
impl pb::booking_service_server::BookingService for Api {
    async fn create_booking(
        &self,
        req: Request<pb::CreateBookingRequest>,
    ) -> Result<Response<pb::CreateBookingResponse>, Status> {
        self.mutate(req, async |app, unit, who, new| {
            let booking = app.create_booking(unit, who, new).await?;
            Ok(pb::CreateBookingResponse {
                booking: Some(booking.into()),
            })
        })
        .await
    }

    async fn get_booking(
        &self,
        req: Request<pb::GetBookingRequest>,
    ) -> Result<Response<pb::GetBookingResponse>, Status> {
        self.read(req, async |app, who, id| {
            let booking = app.get_booking(&who, id).await?;
            Ok(pb::GetBookingResponse {
                booking: Some(booking.into()),
            })
        })
        .await
    }

    async fn list_booking_events(
        &self,
        req: Request<pb::ListBookingEventsRequest>,
    ) -> Result<Response<pb::ListBookingEventsResponse>, Status> {
        self.read(req, async |app, who, query| {
            let (events, next) = app.list_booking_events(&who, query).await?;
            Ok(pb::ListBookingEventsResponse {
                events: events.into_iter().map(Into::into).collect(),
                next_page_token: next,
            })
        })
        .await
    }

    async fn list_bookings(
        &self,
        req: Request<pb::ListBookingsRequest>,
    ) -> Result<Response<pb::ListBookingsResponse>, Status> {
        self.read(req, async |app, who, query| {
            let (bookings, next) = app.list_bookings(&who, query).await?;
            Ok(pb::ListBookingsResponse {
                bookings: bookings.into_iter().map(Into::into).collect(),
                next_page_token: next,
            })
        })
        .await
    }

    async fn accept_booking(
        &self,
        req: Request<pb::AcceptBookingRequest>,
    ) -> Result<Response<pb::AcceptBookingResponse>, Status> {
        self.mutate(req, async |app, unit, who, id| {
            let (booking, session) = app.accept_booking(unit, who, id).await?;
            Ok(pb::AcceptBookingResponse {
                booking: Some(booking.into()),
                session: Some(session.into()),
            })
        })
        .await
    }

    async fn decline_booking(
        &self,
        req: Request<pb::DeclineBookingRequest>,
    ) -> Result<Response<pb::DeclineBookingResponse>, Status> {
        self.mutate(req, async |app, unit, who, close| {
            let booking = app.decline_booking(unit, who, close).await?;
            Ok(pb::DeclineBookingResponse {
                booking: Some(booking.into()),
            })
        })
        .await
    }

    async fn cancel_booking(
        &self,
        req: Request<pb::CancelBookingRequest>,
    ) -> Result<Response<pb::CancelBookingResponse>, Status> {
        self.mutate(req, async |app, unit, who, close| {
            let booking = app.cancel_booking(unit, who, close).await?;
            Ok(pb::CancelBookingResponse {
                booking: Some(booking.into()),
            })
        })
        .await
    }
}

impl Parse for pb::CreateBookingRequest {
    type Parsed = NewBooking;
    fn parse(&self) -> Result<NewBooking> {
        let mut v = Violations::new();
        let listing_id = v.check(input::id("listing_id", &self.listing_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &self.mentee_id));
        let start_time = v.check(convert::time("start_time", self.start_time.as_ref()));
        let end_time = v.check(convert::time("end_time", self.end_time.as_ref()));
        let notes = v.check(input::optional_text("notes", &self.notes, MAX_TEXT_LEN));
        let new = (|| {
            Some(NewBooking {
                listing_id: listing_id?,
                mentee_id: mentee_id?,
                start_time: start_time?,
                end_time: end_time?,
                notes: notes?,
            })
        })();
        v.into_result(new)
    }
}

impl Parse for pb::GetBookingRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("booking_id", &self.booking_id)
    }
}

impl Parse for pb::ListBookingEventsRequest {
    type Parsed = LogQuery;
    fn parse(&self) -> Result<LogQuery> {
        convert::log_query("booking_id", &self.booking_id, self.page_size, &self.page_token)
    }
}

impl Parse for pb::AcceptBookingRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("booking_id", &self.booking_id)
    }
}

impl Parse for pb::ListBookingsRequest {
    type Parsed = BookingQuery;
    fn parse(&self) -> Result<BookingQuery> {
        let mut v = Violations::new();
        let page = v.check(convert::page(self.page_size, &self.page_token));
        let mentor_id = v.check(input::optional_id("mentor_id", &self.mentor_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &self.mentee_id));
        let listing_id = v.check(input::optional_id("listing_id", &self.listing_id));
        let statuses = v.check(convert::booking_statuses("statuses", &self.statuses));
        let query = (|| {
            Some(BookingQuery {
                filter: ParticipantFilter {
                    mentor_id: mentor_id?,
                    mentee_id: mentee_id?,
                    listing_id: listing_id?,
                    statuses: statuses?,
                },
                page: page?,
            })
        })();
        v.into_result(query)
    }
}

/// A booking id and a required reason.
fn close(booking_id: &str, reason: &str) -> Result<CloseBooking> {
    let mut v = Violations::new();
    let booking_id = v.check(input::id("booking_id", booking_id));
    let reason = v.check(input::required_text("reason", reason, MAX_TEXT_LEN));
    let close = (|| {
        Some(CloseBooking {
            booking_id: booking_id?,
            reason: reason?,
        })
    })();
    v.into_result(close)
}

impl Parse for pb::DeclineBookingRequest {
    type Parsed = CloseBooking;
    fn parse(&self) -> Result<CloseBooking> {
        close(&self.booking_id, &self.reason)
    }
}

impl Parse for pb::CancelBookingRequest {
    type Parsed = CloseBooking;
    fn parse(&self) -> Result<CloseBooking> {
        close(&self.booking_id, &self.reason)
    }
}
