//! BookingService: handlers of a few lines each, and the parser of each request.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Api, Parse, convert, mutating, pb};
use crate::domain::{
    Result, Violations, availability,
    command::{CloseBooking, NewBooking, Reschedule},
    input::{self, MAX_TEXT_LEN},
    openings,
    query::{BookingQuery, CalendarOf, ListFilter, LogQuery, ParticipantFilter, SlotQuery},
};

mutating!(
    pb::CreateBookingRequest,
    pb::AcceptBookingRequest,
    pb::DeclineBookingRequest,
    pb::CancelBookingRequest,
    pb::RescheduleBookingRequest,
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

    async fn reschedule_booking(
        &self,
        req: Request<pb::RescheduleBookingRequest>,
    ) -> Result<Response<pb::RescheduleBookingResponse>, Status> {
        self.mutate(req, async |app, unit, who, r| {
            let done = app.reschedule_booking(unit, who, r).await?;
            Ok(pb::RescheduleBookingResponse {
                booking: Some(done.booking.into()),
                session: done.session.map(Into::into),
                rescheduled_booking: Some(done.rescheduled.into()),
            })
        })
        .await
    }

    async fn batch_get_bookings(
        &self,
        req: Request<pb::BatchGetBookingsRequest>,
    ) -> Result<Response<pb::BatchGetBookingsResponse>, Status> {
        self.read(req, async |app, who, ids| {
            let bookings = app.batch_get_bookings(&who, ids).await?;
            Ok(pb::BatchGetBookingsResponse {
                bookings: bookings.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }

    async fn list_available_slots(
        &self,
        req: Request<pb::ListAvailableSlotsRequest>,
    ) -> Result<Response<pb::ListAvailableSlotsResponse>, Status> {
        self.read(req, async |app, who, query| {
            let found = app.list_available_slots(&who, query).await?;
            let tz = found.shown_in;
            Ok(pb::ListAvailableSlotsResponse {
                slots: found
                    .openings
                    .into_iter()
                    .map(|(start, end)| pb::AvailableSlot {
                        start_time: Some(convert::timestamp(start)),
                        end_time: Some(convert::timestamp(end)),
                        local_start_time: openings::local(start, tz),
                        local_end_time: openings::local(end, tz),
                    })
                    .collect(),
                next_page_token: found.next_page_token,
                time_zone: tz.name().to_owned(),
                mentor_id: found.mentor_id.to_string(),
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
        let start_from = v.check(convert::opt_time("start_time_from", self.start_time_from.as_ref()));
        let start_to = v.check(convert::opt_time("start_time_to", self.start_time_to.as_ref()));
        let order = v.check(convert::order_by(&self.order_by));
        let query = (|| {
            let (sort, descending) = order?;
            Some(BookingQuery {
                filter: ListFilter {
                    participants: ParticipantFilter {
                        mentor_id: mentor_id?,
                        mentee_id: mentee_id?,
                        listing_id: listing_id?,
                        statuses: statuses?,
                    },
                    start_from: start_from?,
                    start_to: start_to?,
                    sort,
                    descending,
                },
                page: page?,
            })
        })();
        v.into_result(query)
    }
}

impl Parse for pb::RescheduleBookingRequest {
    type Parsed = Reschedule;
    fn parse(&self) -> Result<Reschedule> {
        let mut v = Violations::new();
        let booking_id = v.check(input::id("booking_id", &self.booking_id));
        let start_time = v.check(convert::time("start_time", self.start_time.as_ref()));
        let end_time = v.check(convert::time("end_time", self.end_time.as_ref()));
        let reason = v.check(input::optional_text("reason", &self.reason, MAX_TEXT_LEN));
        let r = (|| {
            Some(Reschedule {
                booking_id: booking_id?,
                start_time: start_time?,
                end_time: end_time?,
                reason: reason?,
            })
        })();
        v.into_result(r)
    }
}

impl Parse for pb::BatchGetBookingsRequest {
    type Parsed = Vec<Uuid>;
    fn parse(&self) -> Result<Vec<Uuid>> {
        input::batch_ids("booking_ids", &self.booking_ids)
    }
}

impl Parse for pb::ListAvailableSlotsRequest {
    type Parsed = SlotQuery;
    fn parse(&self) -> Result<SlotQuery> {
        let mut v = Violations::new();
        use pb::list_available_slots_request::Calendar;
        let of = match &self.calendar {
            Some(Calendar::MentorId(id)) => v.check(input::id("mentor_id", id).map(CalendarOf::Mentor)),
            Some(Calendar::ListingId(id)) => v.check(input::id("listing_id", id).map(CalendarOf::Listing)),
            None => {
                v.add("mentor_id", "is required (or listing_id)");
                None
            }
        };
        let from = v.check(convert::time("start_time", self.start_time.as_ref()));
        let to = v.check(convert::time("end_time", self.end_time.as_ref()));
        if let (Some(from), Some(to)) = (from, to) {
            if to <= from {
                v.add("end_time", "must be after start_time");
            } else if to - from > chrono::Duration::days(openings::MAX_RANGE_DAYS) {
                v.add(
                    "end_time",
                    format!("the range may span at most {} days", openings::MAX_RANGE_DAYS),
                );
            }
        }
        let length = match &self.slot_duration {
            None => {
                v.add("slot_duration", "is required");
                None
            }
            Some(d) => v
                .check(convert::minutes("slot_duration", Some(d), 1, 7 * 24 * 60))
                .flatten(),
        };
        let step = v.check(convert::minutes(
            "step",
            self.step.as_ref(),
            openings::MIN_STEP_MINUTES,
            openings::MAX_STEP_MINUTES,
        ));
        let time_zone = if self.time_zone.is_empty() {
            Some(None)
        } else {
            v.check(availability::parse_timezone("time_zone", &self.time_zone).map(|_| Some(self.time_zone.clone())))
        };
        let size = if self.page_size == 0 { 100 } else { self.page_size };
        let page = v.check(convert::page(size, &self.page_token));
        let query = (|| {
            Some(SlotQuery {
                of: of?,
                from: from?,
                to: to?,
                length: length?,
                step: step?,
                time_zone: time_zone?,
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
