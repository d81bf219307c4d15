//! Free times (ListAvailableSlots) and the calendar reads of ListBookings:
//! what is listed is exactly what CreateBooking and AcceptBooking accept.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use mentorship::grpc::pb::{self, DayOfWeek, list_available_slots_request::Calendar};
use rand::seq::SliceRandom;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

fn slots_request(mentor: Uuid, from: DateTime<Utc>, to: DateTime<Utc>, minutes: i64) -> pb::ListAvailableSlotsRequest {
    pb::ListAvailableSlotsRequest {
        calendar: Some(Calendar::MentorId(mentor.to_string())),
        start_time: Some(ts(from)),
        end_time: Some(ts(to)),
        slot_duration: Some(prost_types::Duration {
            seconds: minutes * 60,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Every slot over the request's range, page after page.
async fn all_slots(c: &Caller, mut req: pb::ListAvailableSlotsRequest) -> Vec<pb::AvailableSlot> {
    let mut slots = Vec::new();
    loop {
        let page = c.call(req.clone()).await.expect("list slots");
        slots.extend(page.slots);
        if page.next_page_token.is_empty() {
            return slots;
        }
        req.page_token = page.next_page_token;
    }
}

fn times(slots: &[pb::AvailableSlot]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    slots
        .iter()
        .map(|s| (ts_of(&s.start_time), ts_of(&s.end_time)))
        .collect()
}

/// `hh:mm` on `day` on the clock of `tz`.
fn local(tz: Tz, day: NaiveDate, hh: u32, mm: u32) -> DateTime<Utc> {
    tz.from_local_datetime(&day.and_hms_opt(hh, mm, 0).expect("time"))
        .earliest()
        .expect("exists")
        .with_timezone(&Utc)
}

/// Creates and accepts a booking of `[start, end)` for `mentee`.
async fn book(
    app: &TestApp,
    listing: Uuid,
    mentee: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), tonic::Status> {
    let booking = app
        .coordinator()
        .create_booking(booking_request(listing, mentee, start, end))
        .await?;
    accept(app, &booking.id).await.map(|_| ())
}

/// The consistency test: with step = length, every listed slot is
/// created and accepted in random order and each succeeds; starts just
/// outside the listed ones (a minute before a window opens, over an
/// accepted booking, inside the notice) are refused.
#[tokio::test]
async fn every_listed_slot_can_be_booked_and_accepted_and_the_neighbours_cannot() {
    let app = spawn_app().await;
    let berlin: Tz = "Europe/Berlin".parse().expect("zone");
    let (mentor, _) = add_mentor(
        &app,
        "Europe/Berlin",
        vec![
            window(DayOfWeek::Monday, "09:00", "12:00"),
            window(DayOfWeek::Wednesday, "14:00", "17:00"),
        ],
    )
    .await;
    let listing = add_listing(&app, Some(mentor)).await;
    let (holder, mentee) = (add_mentee(&app).await, add_mentee(&app).await);
    let monday = monday_at(12).with_timezone(&berlin).date_naive();
    let wednesday = monday + Duration::days(2);
    // An accepted booking takes Monday 10:00-10:30.
    book(
        &app,
        listing,
        holder,
        local(berlin, monday, 10, 0),
        local(berlin, monday, 10, 30),
    )
    .await
    .expect("the taken half hour");

    let from = local(berlin, monday, 0, 0);
    let req = slots_request(mentor, from, from + Duration::days(7), 30);
    let slots = all_slots(&app.coordinator(), req.clone()).await;
    let mut expected: Vec<_> = [(9, 0), (9, 30), (10, 30), (11, 0), (11, 30)]
        .into_iter()
        .map(|(h, m)| local(berlin, monday, h, m))
        .chain(
            [14, 15, 16]
                .into_iter()
                .flat_map(|h| [local(berlin, wednesday, h, 0), local(berlin, wednesday, h, 30)]),
        )
        .map(|s| (s, s + Duration::minutes(30)))
        .collect();
    expected.sort();
    assert_eq!(times(&slots), expected);
    assert_eq!(
        slots[0].local_start_time,
        format!("{monday}T09:00:00{}", local_offset(berlin, monday))
    );

    // Just outside: refused by CreateBooking (or AcceptBooking).
    let half_hour = |s: DateTime<Utc>| (s, s + Duration::minutes(30));
    let (s, e) = half_hour(local(berlin, monday, 8, 59));
    assert_status(
        book(&app, listing, mentee, s, e).await,
        Code::FailedPrecondition,
        "OUTSIDE_AVAILABILITY",
    );
    let (s, e) = half_hour(local(berlin, wednesday, 16, 31));
    assert_status(
        book(&app, listing, mentee, s, e).await,
        Code::FailedPrecondition,
        "OUTSIDE_AVAILABILITY",
    );
    let (s, e) = half_hour(local(berlin, monday, 10, 15));
    assert_status(
        book(&app, listing, mentee, s, e).await,
        Code::FailedPrecondition,
        "BOOKING_OVERLAP",
    );

    // Every listed one, in random order: each is created and accepted.
    let mut order = times(&slots);
    order.shuffle(&mut rand::rng());
    for (start, end) in order {
        book(&app, listing, mentee, start, end)
            .await
            .unwrap_or_else(|e| panic!("the listed slot {start}..{end} was refused: {e:?}"));
    }
    assert!(
        all_slots(&app.coordinator(), req).await.is_empty(),
        "every slot is taken now"
    );
}

fn local_offset(tz: Tz, day: NaiveDate) -> String {
    local(tz, day, 12, 0).with_timezone(&tz).format("%:z").to_string()
}

/// The minimum notice (60 minutes by default): no listed slot starts
/// sooner, and CreateBooking refuses a start inside it.
#[tokio::test]
async fn no_slot_starts_inside_the_minimum_notice() {
    let app = spawn_app().await;
    let w = world(&app).await; // a mentor without windows: always available
    let now = Utc::now();
    let slots = times(
        &all_slots(
            &app.coordinator(),
            slots_request(w.mentor, now, now + Duration::hours(4), 30),
        )
        .await,
    );
    assert!(!slots.is_empty());
    assert!(
        slots.iter().all(|(s, _)| *s >= now + Duration::minutes(60)),
        "{slots:?}"
    );
    assert!(
        slots[0].0 < now + Duration::minutes(90),
        "the first one follows the notice: {slots:?}"
    );
    let soon = now + Duration::minutes(30);
    let refused = assert_status(
        book(&app, w.listing, w.mentee, soon, soon + Duration::minutes(30)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&refused), vec!["start_time"]);
    assert!(refused.message().contains("minimum notice"), "{}", refused.message());
    // The second: the first may lie within moments of the notice's edge.
    let (start, end) = slots[1];
    book(&app, w.listing, w.mentee, start, end)
        .await
        .expect("a listed slot");
}

/// The second Sunday of March after next week: the day New York's clocks
/// go from 02:00 EST to 03:00 EDT.
fn next_us_spring_change() -> NaiveDate {
    let soon = Utc::now().date_naive() + Duration::days(7);
    [soon.year(), soon.year() + 1]
        .into_iter()
        .map(|y| {
            let first = NaiveDate::from_ymd_opt(y, 3, 1).expect("date");
            let to_sunday = (7 - first.weekday().num_days_from_sunday()) % 7;
            first + Duration::days(i64::from(to_sunday) + 7)
        })
        .find(|d| *d > soon)
        .expect("one of the two years")
}

/// Across a DST change the slots follow the mentor's wall clock: the
/// skipped hour holds none, and each listed one is booked.
#[tokio::test]
async fn slots_follow_the_mentors_clock_across_a_dst_change_and_show_in_the_callers_zone() {
    let app = spawn_app().await;
    let new_york: Tz = "America/New_York".parse().expect("zone");
    let (mentor, _) = add_mentor(
        &app,
        "America/New_York",
        vec![window(DayOfWeek::Sunday, "01:00", "04:00")],
    )
    .await;
    let listing = add_listing(&app, Some(mentor)).await;
    let mentee = add_mentee(&app).await;
    let sunday = next_us_spring_change();
    let day = |d: NaiveDate| (local(new_york, d, 0, 0), local(new_york, d + Duration::days(1), 0, 0));

    let (from, to) = day(sunday - Duration::days(7));
    assert_eq!(
        all_slots(&app.coordinator(), slots_request(mentor, from, to, 30))
            .await
            .len(),
        6
    );

    let (from, to) = day(sunday);
    let mut req = slots_request(mentor, from, to, 30);
    let slots = all_slots(&app.coordinator(), req.clone()).await;
    let local_starts: Vec<_> = slots.iter().map(|s| s.local_start_time.as_str()).collect();
    assert_eq!(
        local_starts,
        ["01:00:00-05:00", "01:30:00-05:00", "03:00:00-04:00", "03:30:00-04:00"].map(|t| format!("{sunday}T{t}")),
        "only the wall-clock hours that exist"
    );
    assert_eq!(
        slots.last().expect("slots").local_end_time,
        format!("{sunday}T04:00:00-04:00")
    );
    // The same instants, shown on another clock.
    req.time_zone = "Asia/Tokyo".into();
    let in_tokyo = app.coordinator().call(req.clone()).await.expect("slots in Tokyo");
    assert_eq!(in_tokyo.time_zone, "Asia/Tokyo");
    assert_eq!(times(&in_tokyo.slots), times(&slots));
    assert!(in_tokyo.slots[0].local_start_time.ends_with("+09:00"));
    for (start, end) in times(&slots) {
        book(&app, listing, mentee, start, end)
            .await
            .expect("a listed slot across the change");
    }
    // Asked by listing, the same calendar, now full.
    req.calendar = Some(Calendar::ListingId(listing.to_string()));
    let by_listing = app.coordinator().call(req).await.expect("by listing");
    assert_eq!(by_listing.mentor_id, mentor.to_string());
    assert!(by_listing.slots.is_empty());
}

/// Pages in order, each token bound to its request; a mentee's own
/// accepted bookings are left out of what it sees.
#[tokio::test]
async fn slots_come_in_pages_and_a_mentee_sees_only_what_it_could_book() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let from = monday_at(0);
    let mut req = slots_request(w.mentor, from, from + Duration::days(1), 60);
    let whole = app.coordinator().call(req.clone()).await.expect("one page");
    assert_eq!(whole.slots.len(), 24);
    assert!(whole.next_page_token.is_empty());
    req.page_size = 5;
    let first = app.coordinator().call(req.clone()).await.expect("first page");
    assert_eq!(first.slots.len(), 5);
    assert_eq!(all_slots(&app.coordinator(), req.clone()).await, whole.slots);
    let mut other = req.clone();
    other.slot_duration = Some(prost_types::Duration {
        seconds: 1800,
        nanos: 0,
    });
    other.page_token = first.next_page_token;
    let refused = assert_status(
        app.coordinator().call(other).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&refused), vec!["page_token"]);

    // The mentee holds 10:00-11:00 with another mentor: it cannot book then.
    let (elsewhere, _) = add_mentor(&app, "UTC", vec![]).await;
    let other_listing = add_listing(&app, Some(elsewhere)).await;
    book(
        &app,
        other_listing,
        w.mentee,
        from + Duration::hours(10),
        from + Duration::hours(11),
    )
    .await
    .expect("the mentee's other booking");
    req.page_size = 0;
    let as_mentee = app
        .as_(&w.mentee_token())
        .call(req.clone())
        .await
        .expect("as the mentee");
    assert_eq!(as_mentee.slots.len(), 23);
    assert!(
        !times(&as_mentee.slots)
            .iter()
            .any(|(s, _)| *s == from + Duration::hours(10))
    );
    let as_coordinator = app.coordinator().call(req).await.expect("as a coordinator");
    assert_eq!(as_coordinator.slots.len(), 24);
}

/// Bad input names its field and reads nothing.
#[tokio::test]
async fn bad_slot_requests_name_the_field() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let from = monday_at(0);
    let ok = slots_request(w.mentor, from, from + Duration::days(1), 60);
    let cases: Vec<(pb::ListAvailableSlotsRequest, &str)> = vec![
        (
            pb::ListAvailableSlotsRequest {
                end_time: Some(ts(from)),
                ..ok.clone()
            },
            "end_time",
        ),
        (
            pb::ListAvailableSlotsRequest {
                end_time: Some(ts(from + Duration::days(31) + Duration::minutes(1))),
                ..ok.clone()
            },
            "end_time",
        ),
        (
            pb::ListAvailableSlotsRequest {
                time_zone: "Mars/Olympus_Mons".into(),
                ..ok.clone()
            },
            "time_zone",
        ),
        (
            pb::ListAvailableSlotsRequest {
                slot_duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
                ..ok.clone()
            },
            "slot_duration",
        ),
        (
            pb::ListAvailableSlotsRequest {
                slot_duration: Some(prost_types::Duration {
                    seconds: 9 * 3600,
                    nanos: 0,
                }),
                ..ok.clone()
            },
            "slot_duration",
        ),
        (
            pb::ListAvailableSlotsRequest {
                step: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
                ..ok.clone()
            },
            "step",
        ),
        (
            pb::ListAvailableSlotsRequest {
                calendar: Some(Calendar::ListingId("not-an-id".into())),
                ..ok.clone()
            },
            "listing_id",
        ),
        (
            pb::ListAvailableSlotsRequest {
                calendar: None,
                ..ok.clone()
            },
            "mentor_id",
        ),
    ];
    for (req, field) in cases {
        let status = assert_status(
            app.coordinator().call(req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), vec![field], "{status:?}");
    }
    assert_status(
        app.coordinator()
            .call(pb::ListAvailableSlotsRequest {
                calendar: Some(Calendar::MentorId(Uuid::new_v4().to_string())),
                ..ok.clone()
            })
            .await,
        Code::NotFound,
        "MENTOR_NOT_FOUND",
    );
    // A 30-day range is fine.
    let month = pb::ListAvailableSlotsRequest {
        end_time: Some(ts(from + Duration::days(31))),
        ..ok
    };
    app.coordinator().call(month).await.expect("31 days");
}

/// ListBookings filters by start time and orders as asked.
#[tokio::test]
async fn bookings_filter_by_start_time_and_order_as_asked() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let t = monday_at(9);
    // Created in this order: 11:00, 9:00, 13:00, 10:00.
    let hours = [2, 0, 4, 1];
    for h in hours {
        draft(
            &app,
            &w,
            t + Duration::hours(h),
            t + Duration::hours(h) + Duration::minutes(30),
        )
        .await;
    }
    let list = async |from: i64, to: i64, order: &str| -> Vec<DateTime<Utc>> {
        app.coordinator()
            .list_bookings(pb::ListBookingsRequest {
                mentor_id: w.mentor.to_string(),
                start_time_from: Some(ts(t + Duration::hours(from))),
                start_time_to: Some(ts(t + Duration::hours(to))),
                order_by: order.into(),
                page_size: 2,
                ..Default::default()
            })
            .await
            .expect("list")
            .bookings
            .iter()
            .map(|b| ts_of(&b.start_time))
            .collect()
    };
    let h = |n: i64| t + Duration::hours(n);
    assert_eq!(list(0, 3, "start_time").await, vec![h(0), h(1)]);
    assert_eq!(list(0, 5, "start_time desc").await, vec![h(4), h(2)]);
    assert_eq!(list(1, 4, "").await, vec![h(1), h(2)], "newest first by default");
    // Paging in start order goes through every one in the range.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .coordinator()
            .list_bookings(pb::ListBookingsRequest {
                mentor_id: w.mentor.to_string(),
                start_time_from: Some(ts(h(0))),
                order_by: "start_time asc".into(),
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page");
        seen.extend(page.bookings.iter().map(|b| ts_of(&b.start_time)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec![h(0), h(1), h(2), h(4)]);
}
