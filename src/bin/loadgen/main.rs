//! Load generator for `mentorship`: drives a scenario against one or more
//! running replicas from N concurrent workers for a fixed time, then prints
//! per-RPC throughput and latency percentiles.
//!
//! Scenarios:
//! - `lifecycle` (default): the booking flow and the on-demand session lifecycle;
//! - `capacity-busy`: every worker books and starts sessions with one shared
//!   mentor whose limit is 3 (admission contends on that mentor);
//! - `capacity-idle`: the same with a mentor per worker (limit 3, never full);
//! - `seed`: fills `--database-url` with `--sessions` sessions in every status
//!   and their events (over `--mentors` and `--mentees`), for the history ones:
//! - `lists`: ListSessions pages per query shape, p50/p99, with pgbench scripts
//!   of the same SQL (`--pgbench-dir`) and the plans;
//! - `export`: one ExportSessions stream of everything (`--format`);
//! - `prepare`: `--workers` ACTIVE sessions, one per mentor, listed in
//!   `bench_sessions` for the write-path ones:
//! - `transitions`: PauseSession/ResumeSession on those sessions, one caller
//!   each, on one channel (`--watch`: delivery latency on the same replica and
//!   across replicas);
//! - `reads`: GetSession on those sessions;
//! - `idle-streams`: `--streams` idle WatchSession streams from as many callers:
//!   memory per stream (of `--pid`) and database transactions/s while idle;
//! - `rest-vs-grpc`: GetSession and PauseSession/ResumeSession over REST/JSON
//!   and over gRPC in alternating phases, one ACTIVE session per worker:
//!   REST's throughput and latency as ratios of gRPC's;
//! - `slots`: ListAvailableSlots for a mentor with a year of accepted
//!   bookings, against CreateBooking in alternating phases: its latency as
//!   a ratio of CreateBooking's.
//!
//! ```sh
//! MENTORSHIP_JWT_SECRET=… cargo run --release --bin loadgen -- --addr http://127.0.0.1:50051 --workers 16 --seconds 20
//! ```

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

mod history;
mod record;
mod rest;
mod slots;
mod write_path;

use anyhow::Context;
use clap::Parser;
use mentorship::grpc::{
    auth::{Claims, mint_hs256},
    pb::{
        self, booking_service_client::BookingServiceClient, directory_service_client::DirectoryServiceClient,
        session_service_client::SessionServiceClient,
    },
};
use tonic::{Request, transport::Channel};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Load generator for the mentorship service")]
struct Args {
    /// Server URL; repeat it to spread the workers over several replicas.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: Vec<String>,
    /// What the workers do.
    #[arg(long, value_enum, default_value_t = Scenario::Lifecycle)]
    scenario: Scenario,
    /// HS256 secret the server verifies with (every scenario but `seed`).
    #[arg(long, env = "MENTORSHIP_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Concurrent workers (each loops over the flows).
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// PostgreSQL URL, for `seed` (where to write) and `lists` (picking values, plans).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// `seed`: sessions to add.
    #[arg(long, default_value_t = 1_000_000)]
    sessions: i64,
    /// `seed`: mentors they spread over.
    #[arg(long, default_value_t = 10_000)]
    mentors: i64,
    /// `seed`: mentees they spread over.
    #[arg(long, default_value_t = 100_000)]
    mentees: i64,
    /// `lists`: calls per query shape.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    /// `lists`: where to write the pgbench script of each shape.
    #[arg(long, default_value = "target/pgbench-lists")]
    pgbench_dir: std::path::PathBuf,
    /// `export`: csv or json-lines.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// `transitions`: also watch every session on the first and the last replica.
    #[arg(long)]
    watch: bool,
    /// `transitions`: also subscribe a webhook receiver (in this process) to
    /// every event, for deliveries/s and commit-to-POST latency.
    #[arg(long)]
    webhooks: bool,
    /// `idle-streams`: how many.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// `idle-streams`: the server's process id (for its memory).
    #[arg(long)]
    pid: Option<u32>,
    /// `record`: where every call's outcome goes, a JSON line each.
    #[arg(long, default_value = "target/loadgen-history.jsonl")]
    record_file: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Csv,
    JsonLines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Lifecycle,
    CapacityBusy,
    CapacityIdle,
    Seed,
    Lists,
    Export,
    Prepare,
    Transitions,
    Reads,
    IdleStreams,
    RestVsGrpc,
    Slots,
    /// Keeps going through faults and records every call's outcome.
    Record,
}

type Samples = BTreeMap<&'static str, Vec<Duration>>;

/// A coordinator's token for an hour, with a `sub` of its own.
fn coordinator_token(secret: &[u8]) -> anyhow::Result<String> {
    mint_hs256(
        secret,
        &Claims {
            sub: Uuid::new_v4().to_string(),
            roles: vec!["coordinator".into()],
            mentor_id: None,
            exp: chrono::Utc::now().timestamp() + 3600,
            ..Claims::default()
        },
    )
}

fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(value) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// Times one call and records it under `name`.
async fn timed<T, F: std::future::Future<Output = Result<T, tonic::Status>>>(
    samples: &mut Samples,
    name: &'static str,
    call: F,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let out = call.await.with_context(|| name)?;
    samples.entry(name).or_default().push(start.elapsed());
    Ok(out)
}

/// A mentee of its own.
async fn add_mentee(channel: &Channel, token: &str, index: usize) -> anyhow::Result<Uuid> {
    let mentee = Uuid::new_v4();
    DirectoryServiceClient::new(channel.clone())
        .upsert_mentee(authed(
            token,
            pb::UpsertMenteeRequest {
                mentee: Some(pb::Mentee {
                    id: mentee.to_string(),
                    display_name: format!("mentee {index}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?;
    Ok(mentee)
}

/// A mentor (accepting sessions, the configured default limit) and a
/// listing of it; returns the listing's id.
async fn add_listing(channel: &Channel, token: &str, index: usize) -> anyhow::Result<String> {
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mentor = directory
        .upsert_mentor(authed(
            token,
            pb::UpsertMentorRequest {
                mentor: Some(pb::Mentor {
                    user_id: Uuid::new_v4().to_string(),
                    display_name: format!("mentor {index}"),
                    timezone: "UTC".into(),
                    accepting_sessions: true,
                    max_concurrent_sessions: 3,
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
                    mentor_id: mentor.id,
                    title: "load".into(),
                    skill_area: "load".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .listing
        .context("listing")?;
    Ok(listing.id)
}

/// Capacity: book a session (not timed), start it (admission), then
/// complete it when it was admitted or cancel it when it queued. With a
/// shared listing, `workers` workers take turns on the mentor's calendar.
async fn capacity_worker(
    channel: Channel,
    token: String,
    until: Instant,
    index: usize,
    workers: usize,
    shared: Option<String>,
    base: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Samples> {
    let mut bookings = BookingServiceClient::new(channel.clone());
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mentee = add_mentee(&channel, &token, index).await?;
    let listing = match shared {
        Some(listing) => listing,
        None => add_listing(&channel, &token, index).await?,
    };
    let mut samples = Samples::new();
    let mut turn = 0i64;
    while Instant::now() < until {
        // Each (worker, turn) has its own quarter hour on the mentor's calendar.
        let start = base + chrono::Duration::minutes(15 * (turn * workers as i64 + index as i64));
        turn += 1;
        let booking = bookings
            .create_booking(authed(
                &token,
                pb::CreateBookingRequest {
                    listing_id: listing.clone(),
                    mentee_id: mentee.to_string(),
                    start_time: Some(mentorship::grpc::convert::timestamp(start)),
                    end_time: Some(mentorship::grpc::convert::timestamp(
                        start + chrono::Duration::minutes(15),
                    )),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner()
            .booking
            .context("booking")?;
        let session = bookings
            .accept_booking(authed(
                &token,
                pb::AcceptBookingRequest {
                    booking_id: booking.id,
                    request_id: String::new(),
                },
            ))
            .await?
            .into_inner()
            .session
            .context("session")?;
        let started = timed(
            &mut samples,
            "StartSession",
            sessions.start_session(authed(
                &token,
                pb::StartSessionRequest {
                    session_id: session.id.clone(),
                    ..Default::default()
                },
            )),
        )
        .await?
        .into_inner()
        .session
        .context("session")?;
        if started.status() == pb::SessionStatus::Active {
            timed(
                &mut samples,
                "CompleteSession",
                sessions.complete_session(authed(
                    &token,
                    pb::CompleteSessionRequest {
                        session_id: session.id,
                        ..Default::default()
                    },
                )),
            )
            .await?;
        } else {
            timed(
                &mut samples,
                "CancelSession (queued)",
                sessions.cancel_session(authed(
                    &token,
                    pb::CancelSessionRequest {
                        session_id: session.id,
                        reason: "load".into(),
                        ..Default::default()
                    },
                )),
            )
            .await?;
        }
    }
    Ok(samples)
}

/// One worker: its own mentee, mentor and listing; loops until `until`.
async fn worker(channel: Channel, token: String, until: Instant, index: usize) -> anyhow::Result<Samples> {
    let mut bookings = BookingServiceClient::new(channel.clone());
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mentee = add_mentee(&channel, &token, index).await?;
    let listing = add_listing(&channel, &token, index).await?;
    let mut samples = Samples::new();
    // Bookings walk forward in time so they never overlap.
    let mut slot = chrono::Utc::now() + chrono::Duration::days(1);
    while Instant::now() < until {
        // The booking flow: create, accept.
        let start = slot;
        slot += chrono::Duration::hours(1);
        let booking = timed(
            &mut samples,
            "CreateBooking",
            bookings.create_booking(authed(
                &token,
                pb::CreateBookingRequest {
                    listing_id: listing.clone(),
                    mentee_id: mentee.to_string(),
                    start_time: Some(mentorship::grpc::convert::timestamp(start)),
                    end_time: Some(mentorship::grpc::convert::timestamp(
                        start + chrono::Duration::minutes(30),
                    )),
                    notes: String::new(),
                    request_id: Uuid::new_v4().to_string(),
                },
            )),
        )
        .await?
        .into_inner()
        .booking
        .context("booking")?;
        timed(
            &mut samples,
            "AcceptBooking",
            bookings.accept_booking(authed(
                &token,
                pb::AcceptBookingRequest {
                    booking_id: booking.id,
                    request_id: Uuid::new_v4().to_string(),
                },
            )),
        )
        .await?;

        // The on-demand session lifecycle.
        let session = timed(
            &mut samples,
            "CreateSession",
            sessions.create_session(authed(
                &token,
                pb::CreateSessionRequest {
                    mentee_id: mentee.to_string(),
                    listing_id: listing.clone(),
                    ..Default::default()
                },
            )),
        )
        .await?
        .into_inner()
        .session
        .context("session")?;
        let id = session.id;
        timed(
            &mut samples,
            "PauseSession",
            sessions.pause_session(authed(
                &token,
                pb::PauseSessionRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            )),
        )
        .await?;
        timed(
            &mut samples,
            "ResumeSession",
            sessions.resume_session(authed(
                &token,
                pb::ResumeSessionRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            )),
        )
        .await?;
        timed(
            &mut samples,
            "AdvanceStage",
            sessions.advance_stage(authed(
                &token,
                pb::AdvanceStageRequest {
                    session_id: id.clone(),
                    stage: "review".into(),
                    ..Default::default()
                },
            )),
        )
        .await?;
        // A watcher on the session: how long after CompleteSession returns does its event arrive?
        let mut watch = sessions
            .watch_session(authed(
                &token,
                pb::WatchSessionRequest {
                    session_id: id.clone(),
                    after_seq: Some(4),
                },
            ))
            .await?
            .into_inner();
        let arrived = tokio::spawn(async move {
            while let Ok(Some(item)) = watch.message().await {
                if let Some(pb::watch_session_response::Item::Event(e)) = item.item
                    && e.to_status() == pb::SessionStatus::Completed
                {
                    return Some(Instant::now());
                }
            }
            None
        });
        timed(
            &mut samples,
            "CompleteSession",
            sessions.complete_session(authed(
                &token,
                pb::CompleteSessionRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            )),
        )
        .await?;
        let returned = Instant::now();
        if let Some(at) = arrived.await? {
            samples
                .entry("watch delivery*")
                .or_default()
                .push(at.saturating_duration_since(returned));
        }
        timed(
            &mut samples,
            "GetSession",
            sessions.get_session(authed(&token, pb::GetSessionRequest { session_id: id.clone() })),
        )
        .await?;
        timed(
            &mut samples,
            "ListSessionEvents",
            sessions.list_session_events(authed(
                &token,
                pb::ListSessionEventsRequest {
                    session_id: id,
                    ..Default::default()
                },
            )),
        )
        .await?;
    }
    Ok(samples)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = match &args.database_url {
        Some(url) => Some(mentorship::connect_for_tools(url, 4).await?),
        None => None,
    };
    let need_pool = || pool.as_ref().context("this scenario needs --database-url");
    if args.scenario == Scenario::Seed {
        return history::seed(need_pool()?, args.sessions, args.mentors, args.mentees).await;
    }
    let token = coordinator_token(
        args.secret
            .as_deref()
            .context("this scenario calls the server: set --secret or MENTORSHIP_JWT_SECRET")?
            .as_bytes(),
    )?;
    let mut channels = Vec::new();
    for addr in &args.addr {
        channels.push(Channel::from_shared(addr.clone())?.tcp_nodelay(true).connect().await?);
    }
    match args.scenario {
        Scenario::Lists => {
            return history::lists(
                channels[0].clone(),
                &token,
                need_pool()?,
                args.iterations,
                &args.pgbench_dir,
            )
            .await;
        }
        Scenario::Export => {
            let format = match args.format {
                Format::Csv => pb::ExportFormat::Csv,
                Format::JsonLines => pb::ExportFormat::JsonLines,
            };
            return history::export(channels[0].clone(), &token, format).await;
        }
        Scenario::Prepare => return write_path::prepare(&channels[0], &token, need_pool()?, args.workers).await,
        Scenario::Transitions => {
            let pool = need_pool()?;
            let watch = write_path::Watch {
                streams: args.watch,
                webhooks: args.webhooks,
            };
            return write_path::transitions(&channels, &token, pool, args.workers, args.seconds, watch).await;
        }
        Scenario::RestVsGrpc => {
            return rest::run(&args.addr[0], &channels[0], &token, args.workers, args.seconds).await;
        }
        Scenario::Slots => return slots::run(&channels[0], &token, args.workers, args.seconds).await,
        Scenario::Record => {
            return record::run(&channels, &token, args.workers, args.seconds, &args.record_file).await;
        }
        Scenario::Reads => return write_path::reads(&channels, &token, need_pool()?, args.workers, args.seconds).await,
        Scenario::IdleStreams => {
            let secret = args.secret.as_deref().unwrap_or_default().as_bytes();
            let pid = args.pid.context("idle-streams needs --pid of the server")?;
            return write_path::idle_streams(&args.addr[0], secret, need_pool()?, args.streams, args.seconds, pid)
                .await;
        }
        _ => {}
    }
    let shared = match args.scenario {
        Scenario::CapacityBusy => Some(add_listing(&channels[0], &token, usize::MAX).await?),
        _ => None,
    };
    // One calendar for every worker: each (worker, turn) has its own quarter hour.
    let base = chrono::DurationRound::duration_trunc(
        chrono::Utc::now() + chrono::Duration::days(1),
        chrono::Duration::minutes(15),
    )?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut handles = Vec::new();
    for i in 0..args.workers {
        let channel = channels[i % channels.len()].clone();
        handles.push(match args.scenario {
            Scenario::Lifecycle => tokio::spawn(worker(channel, token.clone(), until, i)),
            // The capacity scenarios (the history ones returned above).
            _ => tokio::spawn(capacity_worker(
                channel,
                token.clone(),
                until,
                i,
                args.workers,
                shared.clone(),
                base,
            )),
        });
    }
    let mut all = Samples::new();
    for h in handles {
        for (name, mut v) in h.await?? {
            all.entry(name).or_default().append(&mut v);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "scenario={:?} replicas={} workers={} seconds={:.1}",
        args.scenario,
        args.addr.len(),
        args.workers,
        elapsed
    );
    println!("| rpc | calls | calls/s | p50 ms | p95 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut total = 0;
    for (name, mut v) in all {
        v.sort();
        if !name.ends_with('*') {
            total += v.len();
        }
        println!(
            "| {name} | {} | {:.0} | {} | {} | {} | {} |",
            v.len(),
            v.len() as f64 / elapsed,
            ms(percentile(&v, 50.0)),
            ms(percentile(&v, 95.0)),
            ms(percentile(&v, 99.0)),
            ms(*v.last().unwrap_or(&Duration::ZERO)),
        );
    }
    println!("| all | {total} | {:.0} | | | | |", total as f64 / elapsed);
    println!("\n*: from the committing call's response to the event reaching a WatchSession stream.");
    Ok(())
}
