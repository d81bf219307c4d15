//! `slots`: ListAvailableSlots for a mentor with a year of ACCEPTED
//! bookings, against CreateBooking, in one run. The mentor (Europe/Berlin,
//! Monday to Friday 09:00-17:00) gets an hour-long accepted booking at
//! 09:00, 11:00, 13:00 and 15:00 of every working day of the coming year
//! (about 1,040), so every 31-day answer is computed against about 90 of
//! them and still has free hours to list. Then the workers alternate
//! phases: ListAvailableSlots of a random 31-day range in that year (30
//! minute slots), and CreateBooking of a DRAFT in a free hour. Prints each
//! call's latency percentiles and ListAvailableSlots' p50 and p99 as ratios
//! of CreateBooking's.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Datelike, TimeZone, Utc};
use mentorship::grpc::{
    convert::timestamp,
    pb::{self, booking_service_client::BookingServiceClient, directory_service_client::DirectoryServiceClient},
};
use tonic::transport::Channel;

use super::{add_mentee, authed, ms, percentile};

/// The working days of the coming year, from next Monday, as UTC dates.
fn working_days() -> Vec<chrono::NaiveDate> {
    let today = Utc::now().date_naive();
    let monday = today + chrono::Duration::days(i64::from(7 - today.weekday().num_days_from_monday()));
    (0..364)
        .map(|d| monday + chrono::Duration::days(d))
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .collect()
}

/// `hour`:00 on `day` in Berlin.
fn berlin(day: chrono::NaiveDate, hour: u32) -> chrono::DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .from_local_datetime(&day.and_hms_opt(hour, 0, 0).expect("a time"))
        .earliest()
        .expect("exists")
        .with_timezone(&Utc)
}

pub async fn run(channel: &Channel, token: &str, workers: usize, seconds: u64) -> anyhow::Result<()> {
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut bookings = BookingServiceClient::new(channel.clone());
    let windows = (1..=5)
        .map(|day| pb::AvailabilityWindow {
            day_of_week: day,
            start_local_time: "09:00".into(),
            end_local_time: "17:00".into(),
        })
        .collect();
    let mentor = directory
        .upsert_mentor(authed(
            token,
            pb::UpsertMentorRequest {
                mentor: Some(pb::Mentor {
                    user_id: uuid::Uuid::new_v4().to_string(),
                    display_name: "busy mentor".into(),
                    timezone: "Europe/Berlin".into(),
                    accepting_sessions: true,
                    availability: windows,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .mentor
        .context("mentor")?;
    let listing = directory
        .upsert_listing(authed(
            token,
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: mentor.id.clone(),
                    title: "slots".into(),
                    skill_area: "load".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .listing
        .context("listing")?
        .id;
    let mentee = add_mentee(channel, token, 0).await?.to_string();
    let days = working_days();
    let started = Instant::now();
    for day in &days {
        for hour in [9, 11, 13, 15] {
            let start = berlin(*day, hour);
            let draft = bookings
                .create_booking(authed(
                    token,
                    pb::CreateBookingRequest {
                        listing_id: listing.clone(),
                        mentee_id: mentee.clone(),
                        start_time: Some(timestamp(start)),
                        end_time: Some(timestamp(start + chrono::Duration::hours(1))),
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner()
                .booking
                .context("booking")?;
            bookings
                .accept_booking(authed(
                    token,
                    pb::AcceptBookingRequest {
                        booking_id: draft.id,
                        request_id: String::new(),
                    },
                ))
                .await?;
        }
    }
    println!(
        "seeded {} accepted bookings over {} working days in {:.1} s",
        days.len() * 4,
        days.len(),
        started.elapsed().as_secs_f64()
    );

    let mut list_samples = Vec::new();
    let mut create_samples = Vec::new();
    let mut slots_seen = 0usize;
    let phases = 8;
    for phase in 0..phases {
        let until = Instant::now() + Duration::from_secs_f64(seconds as f64 / phases as f64);
        let listing_phase = phase % 2 == 0;
        let mut handles = Vec::new();
        for w in 0..workers {
            let (channel, token, listing, mentee, mentor_id, days) = (
                channel.clone(),
                token.to_owned(),
                listing.clone(),
                mentee.clone(),
                mentor.id.clone(),
                days.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut bookings = BookingServiceClient::new(channel);
                let mut samples = Vec::new();
                let mut seen = 0usize;
                let mut turn = w;
                while Instant::now() < until {
                    turn += workers;
                    let day = days[turn * 7919 % (days.len() - 23)];
                    let at = Instant::now();
                    if listing_phase {
                        let from = berlin(day, 0);
                        let answer = bookings
                            .list_available_slots(authed(
                                &token,
                                pb::ListAvailableSlotsRequest {
                                    calendar: Some(pb::list_available_slots_request::Calendar::MentorId(
                                        mentor_id.clone(),
                                    )),
                                    start_time: Some(timestamp(from)),
                                    end_time: Some(timestamp(from + chrono::Duration::days(31))),
                                    slot_duration: Some(prost_types::Duration {
                                        seconds: 1800,
                                        nanos: 0,
                                    }),
                                    page_size: 100,
                                    ..Default::default()
                                },
                            ))
                            .await?
                            .into_inner();
                        seen += answer.slots.len();
                    } else {
                        let start = berlin(day, 10);
                        bookings
                            .create_booking(authed(
                                &token,
                                pb::CreateBookingRequest {
                                    listing_id: listing.clone(),
                                    mentee_id: mentee.clone(),
                                    start_time: Some(timestamp(start)),
                                    end_time: Some(timestamp(start + chrono::Duration::hours(1))),
                                    ..Default::default()
                                },
                            ))
                            .await?;
                    }
                    samples.push(at.elapsed());
                }
                anyhow::Ok((samples, seen))
            }));
        }
        for h in handles {
            let (samples, seen) = h.await??;
            slots_seen += seen;
            if listing_phase {
                list_samples.extend(samples);
            } else {
                create_samples.extend(samples);
            }
        }
    }
    list_samples.sort();
    create_samples.sort();
    let row = |name: &str, s: &[Duration]| {
        println!(
            "{name:<20} calls={:>6} p50={:>7} ms p90={:>7} ms p99={:>7} ms",
            s.len(),
            ms(percentile(s, 50.0)),
            ms(percentile(s, 90.0)),
            ms(percentile(s, 99.0))
        );
    };
    println!("workers={workers} seconds={seconds}");
    row("ListAvailableSlots", &list_samples);
    row("CreateBooking", &create_samples);
    let ratio = |p: f64| percentile(&list_samples, p).as_secs_f64() / percentile(&create_samples, p).as_secs_f64();
    println!(
        "ListAvailableSlots / CreateBooking: p50 {:.2}x, p99 {:.2}x ({} slots listed, {:.0} a call)",
        ratio(50.0),
        ratio(99.0),
        slots_seen,
        slots_seen as f64 / list_samples.len().max(1) as f64
    );
    Ok(())
}
