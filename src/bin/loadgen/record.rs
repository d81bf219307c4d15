//! `--scenario record`: load that keeps going through faults and records
//! every call's outcome, for benchmarks under faults (a failover of
//! `scripts/ha-cluster` in the middle of a run, say).
//!
//! Each worker takes on-demand sessions of its own mentee through pause,
//! resume and complete (or cancels the queued ones). Every call carries a
//! `request_id` and a 5 s deadline; a call whose outcome is unknown
//! (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNKNOWN, INTERNAL: the request
//! may have been applied) is retried with the same `request_id` on the next
//! replica, as the test suite's history checker (`tests/api/checker.rs`)
//! classifies and retries them. Every call is written to `--record-file` as
//! a JSON line; the summary gives the counts and each outage: from the first
//! call that failed to the next OK one.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use mentorship::grpc::pb::{self, session_service_client::SessionServiceClient};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{add_listing, add_mentee, authed};

/// One call as its client saw it.
#[derive(Debug, Clone)]
struct Call {
    rpc: &'static str,
    request_id: Uuid,
    invoked: Duration,
    completed: Duration,
    /// "ok", "failed" or "unknown".
    outcome: &'static str,
    code: Code,
}

/// Whether a failed call's outcome is unknown (the checker's rule).
fn unknown(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal
    )
}

#[derive(Clone)]
struct Recorder {
    started: Instant,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    /// Calls until the outcome is known (at most 8 times), one request_id,
    /// on the replicas in turn from `first`.
    async fn call<T, F, Fut>(&self, rpc: &'static str, first: usize, mut call: F) -> Option<T>
    where
        F: FnMut(usize, String) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let request_id = Uuid::new_v4();
        for attempt in 0..8 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            let invoked = self.started.elapsed();
            let answered = call(first + attempt, request_id.to_string()).await;
            let (outcome, code) = match &answered {
                Ok(_) => ("ok", Code::Ok),
                Err(s) if unknown(s.code()) => ("unknown", s.code()),
                Err(s) => ("failed", s.code()),
            };
            self.calls.lock().expect("calls").push(Call {
                rpc,
                request_id,
                invoked,
                completed: self.started.elapsed(),
                outcome,
                code,
            });
            match answered {
                Ok(r) => return Some(r.into_inner()),
                Err(_) if outcome == "unknown" => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

/// A request with the token and the call's 5 s deadline.
fn with_deadline<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = authed(token, message);
    request.set_timeout(Duration::from_secs(5));
    request
}

pub async fn run(
    channels: &[Channel],
    token: &str,
    workers: usize,
    seconds: u64,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let rec = Recorder {
        started: Instant::now(),
        calls: Default::default(),
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for i in 0..workers {
        let mentee = add_mentee(&channels[0], token, i).await?;
        let listing = add_listing(&channels[0], token, i).await?;
        let clients: Vec<SessionServiceClient<Channel>> =
            channels.iter().cloned().map(SessionServiceClient::new).collect();
        let (rec, token) = (rec.clone(), token.to_owned());
        handles.push(tokio::spawn(async move {
            let on = |k: usize| clients[k % clients.len()].clone();
            let mut n = i;
            while Instant::now() < until {
                n += 1;
                let created = rec
                    .call("CreateSession", n, |k, rid| {
                        let mut c = on(k);
                        let r = with_deadline(
                            &token,
                            pb::CreateSessionRequest {
                                mentee_id: mentee.to_string(),
                                listing_id: listing.clone(),
                                request_id: rid,
                                ..Default::default()
                            },
                        );
                        async move { c.create_session(r).await }
                    })
                    .await;
                let Some(session) = created.and_then(|c| c.session) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let id = session.id.clone();
                if session.status() == pb::SessionStatus::Active {
                    rec.call("PauseSession", n, |k, rid| {
                        let mut c = on(k);
                        let r = with_deadline(
                            &token,
                            pb::PauseSessionRequest {
                                session_id: id.clone(),
                                request_id: rid,
                                ..Default::default()
                            },
                        );
                        async move { c.pause_session(r).await }
                    })
                    .await;
                    rec.call("ResumeSession", n + 1, |k, rid| {
                        let mut c = on(k);
                        let r = with_deadline(
                            &token,
                            pb::ResumeSessionRequest {
                                session_id: id.clone(),
                                request_id: rid,
                                ..Default::default()
                            },
                        );
                        async move { c.resume_session(r).await }
                    })
                    .await;
                }
                let ended = if session.status() != pb::SessionStatus::Active {
                    None
                } else {
                    rec.call("CompleteSession", n, |k, rid| {
                        let mut c = on(k);
                        let r = with_deadline(
                            &token,
                            pb::CompleteSessionRequest {
                                session_id: id.clone(),
                                request_id: rid,
                                ..Default::default()
                            },
                        );
                        async move { c.complete_session(r).await }
                    })
                    .await
                };
                if ended.is_none() {
                    rec.call("CancelSession", n + 1, |k, rid| {
                        let mut c = on(k);
                        let r = with_deadline(
                            &token,
                            pb::CancelSessionRequest {
                                session_id: id.clone(),
                                reason: "cleanup".into(),
                                request_id: rid,
                                ..Default::default()
                            },
                        );
                        async move { c.cancel_session(r).await }
                    })
                    .await;
                }
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    let mut calls = rec.calls.lock().expect("calls").clone();
    calls.sort_by_key(|c| c.completed);
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?);
    for c in &calls {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "rpc": c.rpc,
                "request_id": c.request_id,
                "invoked_ms": c.invoked.as_secs_f64() * 1e3,
                "completed_ms": c.completed.as_secs_f64() * 1e3,
                "outcome": c.outcome,
                "code": format!("{:?}", c.code),
            })
        )?;
    }
    out.flush()?;
    let count = |o: &str| calls.iter().filter(|c| c.outcome == o).count();
    println!(
        "scenario=record replicas={} workers={workers} seconds={seconds} calls={} ok={} failed={} unknown={} (every call in {})",
        channels.len(),
        calls.len(),
        count("ok"),
        count("failed"),
        count("unknown"),
        file.display()
    );
    println!("| outage from | first failed call to next OK call | failed | unknown |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut open: Option<(Duration, usize, usize)> = None;
    for c in &calls {
        match (c.outcome, &mut open) {
            ("ok", Some((from, failed, unknown))) => {
                println!(
                    "| {:.1} s | {:.1} s | {failed} | {unknown} |",
                    from.as_secs_f64(),
                    (c.completed - *from).as_secs_f64()
                );
                open = None;
            }
            ("ok", None) => {}
            (o, Some((_, failed, unknown))) => {
                *if o == "unknown" { unknown } else { failed } += 1;
            }
            // A refusal by the rules (a full system) is an answer, not an outage.
            ("failed", None) if c.code != Code::Aborted => {}
            (o, None) => open = Some((c.invoked, usize::from(o == "failed"), usize::from(o == "unknown"))),
        }
    }
    if let Some((from, failed, unknown)) = open {
        println!("| {:.1} s | until the end | {failed} | {unknown} |", from.as_secs_f64());
    }
    Ok(())
}
