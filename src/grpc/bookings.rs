//! BookingService handlers.

use tonic::{Request, Response, Status};

use super::{Api, auth::principal, begin_or_replay, convert, incomplete, pb};
use crate::app::bookings::NewBooking;
use crate::domain::{
    Violations,
    input::{self, MAX_TEXT_LEN},
};
use crate::store::bookings::BookingFilter;

#[tonic::async_trait]
impl pb::booking_service_server::BookingService for Api {
    async fn create_booking(
        &self,
        req: Request<pb::CreateBookingRequest>,
    ) -> Result<Response<pb::CreateBookingResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let listing_id = v.check(input::id("listing_id", &r.listing_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &r.mentee_id));
        let start = v.check(convert::time("start_time", r.start_time.as_ref()));
        let end = v.check(convert::time("end_time", r.end_time.as_ref()));
        let notes = v.check(input::optional_text("notes", &r.notes, MAX_TEXT_LEN));
        v.finish()?;
        let (Some(listing_id), Some(mentee_id), Some(start_time), Some(end_time), Some(notes)) =
            (listing_id, mentee_id, start, end, notes)
        else {
            return Err(incomplete());
        };
        let new = NewBooking {
            listing_id,
            mentee_id,
            start_time,
            end_time,
            notes,
        };
        let mut m = begin_or_replay!(self, &who, "CreateBooking", r);
        let booking = self.app.create_booking(&mut m.unit, &who, new).await?;
        m.finish(pb::CreateBookingResponse {
            booking: Some(booking.into()),
        })
        .await
    }

    async fn get_booking(
        &self,
        req: Request<pb::GetBookingRequest>,
    ) -> Result<Response<pb::GetBookingResponse>, Status> {
        let who = principal(&req)?;
        let id = input::id("booking_id", &req.get_ref().booking_id)?;
        let booking = self.app.get_booking(&who, id).await?;
        Ok(Response::new(pb::GetBookingResponse {
            booking: Some(booking.into()),
        }))
    }

    async fn list_bookings(
        &self,
        req: Request<pb::ListBookingsRequest>,
    ) -> Result<Response<pb::ListBookingsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let size = v.check(input::page_size(r.page_size));
        let mentor_id = v.check(input::optional_id("mentor_id", &r.mentor_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &r.mentee_id));
        let listing_id = v.check(input::optional_id("listing_id", &r.listing_id));
        let statuses = v.check(convert::booking_statuses("statuses", &r.statuses));
        v.finish()?;
        let (Some(size), Some(mentor_id), Some(mentee_id), Some(listing_id), Some(statuses)) =
            (size, mentor_id, mentee_id, listing_id, statuses)
        else {
            return Err(incomplete());
        };
        let filter = BookingFilter {
            mentor_id,
            mentee_id,
            listing_id,
            statuses,
        };
        let (bookings, next) = self.app.list_bookings(&who, filter, size, &r.page_token).await?;
        Ok(Response::new(pb::ListBookingsResponse {
            bookings: bookings.into_iter().map(Into::into).collect(),
            next_page_token: next,
        }))
    }

    async fn accept_booking(
        &self,
        req: Request<pb::AcceptBookingRequest>,
    ) -> Result<Response<pb::AcceptBookingResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let id = input::id("booking_id", &r.booking_id)?;
        let mut m = begin_or_replay!(self, &who, "AcceptBooking", r);
        let (booking, session) = self.app.accept_booking(&mut m.unit, &who, id).await?;
        m.finish(pb::AcceptBookingResponse {
            booking: Some(booking.into()),
            session: Some(session.into()),
        })
        .await
    }

    async fn decline_booking(
        &self,
        req: Request<pb::DeclineBookingRequest>,
    ) -> Result<Response<pb::DeclineBookingResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (id, reason) = id_and_reason(&r.booking_id, &r.reason)?;
        let mut m = begin_or_replay!(self, &who, "DeclineBooking", r);
        let booking = self.app.decline_booking(&mut m.unit, &who, id, &reason).await?;
        m.finish(pb::DeclineBookingResponse {
            booking: Some(booking.into()),
        })
        .await
    }

    async fn cancel_booking(
        &self,
        req: Request<pb::CancelBookingRequest>,
    ) -> Result<Response<pb::CancelBookingResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (id, reason) = id_and_reason(&r.booking_id, &r.reason)?;
        let mut m = begin_or_replay!(self, &who, "CancelBooking", r);
        let booking = self.app.cancel_booking(&mut m.unit, &who, id, &reason).await?;
        m.finish(pb::CancelBookingResponse {
            booking: Some(booking.into()),
        })
        .await
    }
}

/// A booking id and a required reason.
fn id_and_reason(id: &str, reason: &str) -> Result<(uuid::Uuid, String), Status> {
    let mut v = Violations::new();
    let id = v.check(input::id("booking_id", id));
    let reason = v.check(input::required_text("reason", reason, MAX_TEXT_LEN));
    v.finish()?;
    match (id, reason) {
        (Some(id), Some(reason)) => Ok((id, reason)),
        _ => Err(incomplete()),
    }
}
