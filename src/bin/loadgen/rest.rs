//! `rest-vs-grpc`: GetSession and PauseSession/ResumeSession over REST/JSON
//! (HTTP/1.1, keep-alive) and over gRPC, against the same replica and the
//! same sessions, in one run: each worker owns one ACTIVE session, and the
//! phases alternate surfaces (gRPC, REST, gRPC, REST …) so both see the
//! same machine and database. REST's client keeps a connection per worker
//! (HTTP/1.1); gRPC runs twice, on one channel (one HTTP/2 connection, as a
//! service calls) and with a connection per worker, which isolates the
//! cost of the transcoding from that of the connections. Prints each phase's calls/s and latency
//! percentiles, then REST's figures as ratios of gRPC's.

use std::time::{Duration, Instant};

use anyhow::Context;
use mentorship::grpc::pb::{self, session_service_client::SessionServiceClient};
use tonic::transport::Channel;

use super::{add_listing, add_mentee, authed, ms, percentile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    /// gRPC on one channel (one HTTP/2 connection), as a service calls.
    Grpc,
    /// gRPC with a connection per worker, as REST's HTTP/1.1 pool has.
    GrpcPerWorker,
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Get,
    /// A pause, then a resume: two calls counted.
    PauseResume,
}

/// One worker's ACTIVE session.
async fn session(channel: &Channel, token: &str, index: usize) -> anyhow::Result<String> {
    let listing = add_listing(channel, token, index).await?;
    let mentee = add_mentee(channel, token, index).await?;
    let session = SessionServiceClient::new(channel.clone())
        .create_session(authed(
            token,
            pb::CreateSessionRequest {
                mentee_id: mentee.to_string(),
                listing_id: listing,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .session
        .context("session")?;
    anyhow::ensure!(
        session.status == pb::SessionStatus::Active as i32,
        "session {index} is not ACTIVE: raise the capacity limits for the benchmark"
    );
    Ok(session.id)
}

pub async fn run(addr: &str, channel: &Channel, token: &str, workers: usize, seconds: u64) -> anyhow::Result<()> {
    let mut sessions = Vec::new();
    for i in 0..workers {
        sessions.push(session(channel, token, i).await?);
    }
    let http = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(workers)
        .build()?;
    let base = format!("{}/api/mentorship/sessions", addr.trim_end_matches('/'));
    let mut own_channels = Vec::new();
    for _ in 0..workers {
        own_channels.push(
            Channel::from_shared(addr.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    // Four rounds of six phases, each a 24th of the time; the order
    // alternates so neither surface always runs first.
    let phase = Duration::from_secs_f64(seconds as f64 / 24.0);
    let mut results: Vec<(Call, Surface, Vec<Duration>, Duration)> = Vec::new();
    for round in 0..4 {
        for call in [Call::Get, Call::PauseResume] {
            let order = if round % 2 == 0 {
                [Surface::Grpc, Surface::GrpcPerWorker, Surface::Rest]
            } else {
                [Surface::Rest, Surface::GrpcPerWorker, Surface::Grpc]
            };
            for surface in order {
                let started = Instant::now();
                let until = started + phase;
                let mut handles = Vec::new();
                for id in &sessions {
                    let (id, token, channel, http, base) = (
                        id.clone(),
                        token.to_owned(),
                        channel.clone(),
                        http.clone(),
                        base.clone(),
                    );
                    handles.push(tokio::spawn(async move {
                        drive(call, surface, &id, &token, channel, &http, &base, until).await
                    }));
                }
                let mut samples = Vec::new();
                for h in handles {
                    samples.extend(h.await??);
                }
                results.push((call, surface, samples, started.elapsed()));
            }
        }
    }
    println!("scenario=rest-vs-grpc workers={workers} seconds={seconds}");
    println!(
        "{:<22} {:>6} {:>10} {:>8} {:>8} {:>8}",
        "call", "over", "calls/s", "p50 ms", "p90 ms", "p99 ms"
    );
    let mut summary = Vec::new();
    for call in [Call::Get, Call::PauseResume] {
        let mut per_surface = Vec::new();
        for surface in [Surface::Grpc, Surface::GrpcPerWorker, Surface::Rest] {
            let mut all: Vec<Duration> = Vec::new();
            let mut time = Duration::ZERO;
            for (c, s, samples, elapsed) in &results {
                if *c == call && *s == surface {
                    all.extend(samples);
                    time += *elapsed;
                }
            }
            all.sort();
            let rate = all.len() as f64 / time.as_secs_f64();
            let name = match call {
                Call::Get => "GetSession",
                Call::PauseResume => "PauseSession+Resume",
            };
            println!(
                "{:<22} {:>6} {:>10.0} {:>8} {:>8} {:>8}",
                name,
                match surface {
                    Surface::Grpc => "grpc",
                    Surface::GrpcPerWorker => "grpc-n",
                    Surface::Rest => "rest",
                },
                rate,
                ms(percentile(&all, 50.0)),
                ms(percentile(&all, 90.0)),
                ms(percentile(&all, 99.0)),
            );
            per_surface.push((rate, percentile(&all, 50.0), percentile(&all, 99.0)));
        }
        summary.push((call, per_surface));
    }
    for (call, s) in summary {
        let rest = s[2];
        for (name, grpc) in [("one channel", s[0]), ("a connection per worker", s[1])] {
            println!(
                "ratio {call:?}, REST/gRPC on {name}: throughput {:.2}, p50 {:.2}, p99 {:.2}",
                rest.0 / grpc.0,
                rest.1.as_secs_f64() / grpc.1.as_secs_f64(),
                rest.2.as_secs_f64() / grpc.2.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// One worker's calls until `until`; each call's latency.
#[allow(clippy::too_many_arguments)]
async fn drive(
    call: Call,
    surface: Surface,
    id: &str,
    token: &str,
    channel: Channel,
    http: &reqwest::Client,
    base: &str,
    until: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut grpc = SessionServiceClient::new(channel);
    let mut samples = Vec::new();
    let rest = |method: reqwest::Method, path: String| {
        http.request(method, format!("{base}/{id}{path}"))
            .bearer_auth(token)
            .send()
    };
    while Instant::now() < until {
        let steps: &[&str] = match call {
            Call::Get => &["get"],
            Call::PauseResume => &["pause", "resume"],
        };
        for step in steps {
            let start = Instant::now();
            match surface {
                Surface::Grpc | Surface::GrpcPerWorker => {
                    let session_id = id.to_owned();
                    match *step {
                        "get" => {
                            grpc.get_session(authed(token, pb::GetSessionRequest { session_id }))
                                .await?;
                        }
                        "pause" => {
                            grpc.pause_session(authed(
                                token,
                                pb::PauseSessionRequest {
                                    session_id,
                                    reason: "bench".into(),
                                    ..Default::default()
                                },
                            ))
                            .await?;
                        }
                        _ => {
                            grpc.resume_session(authed(
                                token,
                                pb::ResumeSessionRequest {
                                    session_id,
                                    ..Default::default()
                                },
                            ))
                            .await?;
                        }
                    }
                }
                Surface::Rest => {
                    let response = match *step {
                        "get" => rest(reqwest::Method::GET, String::new()).await?,
                        other => rest(reqwest::Method::POST, format!("/{other}")).await?,
                    };
                    let status = response.status();
                    let body = response.bytes().await?;
                    anyhow::ensure!(
                        status.is_success(),
                        "{step}: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}
