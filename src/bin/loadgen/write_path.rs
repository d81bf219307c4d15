//! The write path next to PostgreSQL itself (issue 10): transitions and
//! reads at N callers, side by side with pgbench running the same SQL
//! (`scripts/bench-write-path`), watch delivery under that load, and idle
//! WatchSession streams.
//!
//! Every scenario works on the sessions `prepare` created and listed in
//! `bench_sessions (n, id)`: one ACTIVE session per mentor, so callers never
//! contend for a row, exactly like pgbench's clients (`:client_id`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use mentorship::grpc::pb::{self, session_service_client::SessionServiceClient};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

use super::{Samples, add_listing, add_mentee, authed, coordinator_token, ms, percentile, timed};

/// Creates `count` ACTIVE sessions, each with a mentor, listing and mentee of
/// its own, and lists them in `bench_sessions`.
pub async fn prepare(channel: &Channel, token: &str, pool: &PgPool, count: usize) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bench_sessions (n int PRIMARY KEY, id uuid NOT NULL); TRUNCATE bench_sessions",
    )
    .execute(pool)
    .await?;
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let mut made = Vec::new();
        for &i in chunk {
            let (channel, token) = (channel.clone(), token.to_owned());
            made.push(tokio::spawn(async move {
                let mentee = add_mentee(&channel, &token, i).await?;
                let listing = add_listing(&channel, &token, i).await?;
                let session = SessionServiceClient::new(channel)
                    .create_session(authed(
                        &token,
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
                    session.status() == pb::SessionStatus::Active,
                    "session {i} is {:?}: raise the limits (scripts/bench-write-path.yaml)",
                    session.status()
                );
                Ok::<_, anyhow::Error>((i, session.id))
            }));
        }
        for m in made {
            let (i, id) = m.await??;
            sqlx::query("INSERT INTO bench_sessions (n, id) VALUES ($1, $2::uuid)")
                .bind(i as i32 + 1)
                .bind(id)
                .execute(pool)
                .await?;
        }
    }
    println!("prepared {count} ACTIVE sessions in bench_sessions");
    Ok(())
}

async fn sessions(pool: &PgPool, count: usize) -> anyhow::Result<Vec<String>> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM bench_sessions ORDER BY n LIMIT $1")
        .bind(count as i64)
        .fetch_all(pool)
        .await
        .context("bench_sessions: run --scenario prepare first")?;
    anyhow::ensure!(
        ids.len() == count,
        "bench_sessions holds {} sessions, {count} needed",
        ids.len()
    );
    Ok(ids.into_iter().map(|id| id.to_string()).collect())
}

/// Calls that failed, by status code and message: a transport error shows
/// here (UNAVAILABLE / UNKNOWN with the h2 reason), never silently.
type Failures = BTreeMap<String, usize>;

fn failed(failures: &mut Failures, status: &tonic::Status) {
    *failures
        .entry(format!("{:?}: {}", status.code(), status.message()))
        .or_default() += 1;
}

/// When each of a session's transitions got its response, in order.
type Responses = Arc<Mutex<Vec<Instant>>>;

/// Pauses and resumes one session for `seconds`.
async fn transition_worker(
    channel: Channel,
    token: String,
    id: String,
    until: Instant,
    responses: Responses,
) -> anyhow::Result<(Samples, Failures)> {
    let mut sessions = SessionServiceClient::new(channel);
    let (mut samples, mut failures) = (Samples::new(), Failures::new());
    let current = sessions
        .get_session(authed(&token, pb::GetSessionRequest { session_id: id.clone() }))
        .await?
        .into_inner()
        .session
        .context("session")?;
    let mut paused = current.status() == pb::SessionStatus::Paused;
    while Instant::now() < until {
        let result = if paused {
            let call = sessions.resume_session(authed(
                &token,
                pb::ResumeSessionRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            ));
            timed(&mut samples, "ResumeSession", call).await.map(drop)
        } else {
            let call = sessions.pause_session(authed(
                &token,
                pb::PauseSessionRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            ));
            timed(&mut samples, "PauseSession", call).await.map(drop)
        };
        match result {
            Ok(_) => {
                paused = !paused;
                responses
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(Instant::now());
            }
            Err(err) => match err.downcast_ref::<tonic::Status>() {
                Some(status) => failed(&mut failures, status),
                None => return Err(err),
            },
        }
    }
    Ok((samples, failures))
}

/// Opens a WatchSession stream of `id` and records when each event arrives.
async fn watcher(channel: Channel, token: String, id: String) -> anyhow::Result<Arc<Mutex<Vec<Instant>>>> {
    let mut stream = open_watch(channel, token, id).await?;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let record = arrivals.clone();
    tokio::spawn(async move {
        while let Ok(Some(item)) = stream.message().await {
            if matches!(item.item, Some(pb::watch_session_response::Item::Event(_))) {
                let Ok(mut arrivals) = record.lock() else { return };
                arrivals.push(Instant::now());
            }
        }
    });
    Ok(arrivals)
}

/// Opens a WatchSession stream of `id` and reads its snapshot.
async fn open_watch(
    channel: Channel,
    token: String,
    id: String,
) -> anyhow::Result<tonic::Streaming<pb::WatchSessionResponse>> {
    let mut stream = SessionServiceClient::new(channel)
        .watch_session(authed(
            &token,
            pb::WatchSessionRequest {
                session_id: id,
                after_seq: None,
            },
        ))
        .await?
        .into_inner();
    stream.message().await?.context("snapshot")?;
    Ok(stream)
}

/// Delivery latency of every event: its arrival after the response of the
/// call that made it (zero when it came first).
fn delivery(responses: &[Responses], arrivals: &[Arc<Mutex<Vec<Instant>>>]) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for (responses, arrivals) in responses.iter().zip(arrivals) {
        let (Ok(responses), Ok(arrivals)) = (responses.lock(), arrivals.lock()) else {
            continue;
        };
        for (sent, came) in responses.iter().zip(arrivals.iter()) {
            latencies.push(came.saturating_duration_since(*sent));
        }
    }
    latencies.sort();
    latencies
}

/// What the transitions scenario also measures.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// WatchSession streams on the first and the last replica.
    pub streams: bool,
    /// A webhook subscription to a receiver in this process.
    pub webhooks: bool,
}

/// Starts an HTTP receiver here and subscribes it (through the service) to
/// the events of `ids`; returns the subscription's id and, per session, when
/// each POST arrived (deliveries come in seq order per session).
async fn receive_webhooks(channel: Channel, token: &str, ids: &[String]) -> anyhow::Result<(String, Vec<Responses>)> {
    use std::collections::HashMap;
    let arrivals: Vec<Responses> = ids.iter().map(|_| Responses::default()).collect();
    let index: Arc<HashMap<String, Responses>> = Arc::new(ids.iter().cloned().zip(arrivals.iter().cloned()).collect());
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let index = index.clone();
            async move {
                let at = Instant::now();
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(arrived) = body["data"]["session_id"].as_str().and_then(|id| index.get(id))
                    && let Ok(mut arrived) = arrived.lock()
                {
                    arrived.push(at);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let subscription = mentorship::grpc::pb::webhook_service_client::WebhookServiceClient::new(channel)
        .create_webhook(authed(
            token,
            pb::CreateWebhookRequest {
                webhook: Some(pb::Webhook {
                    url: format!("http://{addr}/hook"),
                    enabled: Some(true),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner();
    Ok((subscription.webhook.map(|w| w.id).unwrap_or_default(), arrivals))
}

/// `workers` callers pause and resume their own session on one channel
/// (replica 1) for `seconds`. With `watch`, every session is also watched on
/// replica 1 and on the last replica given, for delivery latency.
pub async fn transitions(
    channels: &[Channel],
    token: &str,
    pool: &PgPool,
    workers: usize,
    seconds: u64,
    watch: Watch,
) -> anyhow::Result<()> {
    let ids = sessions(pool, workers).await?;
    let (mut same, mut cross) = (Vec::new(), Vec::new());
    let posts = match watch.webhooks {
        true => Some(receive_webhooks(channels[0].clone(), token, &ids).await?),
        false => None,
    };
    if watch.streams {
        for id in &ids {
            same.push(watcher(channels[0].clone(), token.to_owned(), id.clone()).await?);
            if channels.len() > 1 {
                cross.push(watcher(channels[channels.len() - 1].clone(), token.to_owned(), id.clone()).await?);
            }
        }
    }
    let responses: Vec<Responses> = ids.iter().map(|_| Responses::default()).collect();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for (id, responses) in ids.iter().zip(&responses) {
        handles.push(tokio::spawn(transition_worker(
            channels[0].clone(),
            token.to_owned(),
            id.clone(),
            until,
            responses.clone(),
        )));
    }
    let (mut all, mut failures) = (Samples::new(), Failures::new());
    for h in handles {
        let (samples, failed) = h.await??;
        for (name, mut v) in samples {
            all.entry(name).or_default().append(&mut v);
        }
        for (what, n) in failed {
            *failures.entry(what).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let transitions: usize = all.values().map(Vec::len).sum();
    let mut latencies: Vec<Duration> = all.into_values().flatten().collect();
    latencies.sort();
    println!(
        "transitions workers={workers} seconds={elapsed:.1} calls={transitions} calls_per_s={:.0} p50_ms={} p99_ms={} failed={}",
        transitions as f64 / elapsed,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        failures.values().sum::<usize>()
    );
    for (what, n) in &failures {
        println!("  failed {n}× {what}");
    }
    if let Some((subscription, posts)) = &posts {
        // Wait (at most 30 s) for the last deliveries.
        let sent: usize = responses.iter().map(|r| r.lock().map_or(0, |r| r.len())).sum();
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = || posts.iter().map(|a| a.lock().map_or(0, |a| a.len())).sum::<usize>();
        while arrived() < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last = posts
            .iter()
            .filter_map(|a| a.lock().ok().and_then(|a| a.last().copied()))
            .max()
            .unwrap_or(started);
        let d = delivery(&responses, posts);
        println!(
            "webhooks: delivered={} of {sent} per_s={:.0} p50_ms={} p99_ms={} max_ms={}",
            d.len(),
            d.len() as f64 / last.saturating_duration_since(started).as_secs_f64().max(0.001),
            ms(percentile(&d, 50.0)),
            ms(percentile(&d, 99.0)),
            ms(d.last().copied().unwrap_or_default())
        );
        // What is still open must not load the runs that follow.
        mentorship::grpc::pb::webhook_service_client::WebhookServiceClient::new(channels[0].clone())
            .delete_webhook(authed(
                token,
                pb::DeleteWebhookRequest {
                    webhook_id: subscription.clone(),
                    request_id: String::new(),
                },
            ))
            .await?;
    }
    if watch.streams {
        // Let the last deliveries land.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, arrivals) in [("same replica", &same), ("across replicas", &cross)] {
            if arrivals.is_empty() {
                continue;
            }
            let d = delivery(&responses, arrivals);
            println!(
                "delivery {name}: events={} p50_ms={} p99_ms={} max_ms={}",
                d.len(),
                ms(percentile(&d, 50.0)),
                ms(percentile(&d, 99.0)),
                ms(d.last().copied().unwrap_or_default())
            );
        }
    }
    Ok(())
}

/// `workers` callers read their own session with GetSession for `seconds`.
pub async fn reads(
    channels: &[Channel],
    token: &str,
    pool: &PgPool,
    workers: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let ids = sessions(pool, workers).await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for id in ids {
        let (channel, token) = (channels[0].clone(), token.to_owned());
        handles.push(tokio::spawn(async move {
            let mut sessions = SessionServiceClient::new(channel);
            let mut samples = Samples::new();
            while Instant::now() < until {
                let call = sessions.get_session(authed(&token, pb::GetSessionRequest { session_id: id.clone() }));
                timed(&mut samples, "GetSession", call).await?;
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await??.into_values().flatten());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "reads workers={workers} seconds={elapsed:.1} calls={} calls_per_s={:.0} p50_ms={} p99_ms={}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0))
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

async fn transactions(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?)
}

/// Opens `streams` idle WatchSession streams, each from a caller of its own
/// (a distinct `sub`), over connections of 500 streams; then reports the
/// server's memory per stream (`pid`'s RSS) and the database's
/// transactions/s over `seconds` while they sit idle.
pub async fn idle_streams(
    addr: &str,
    secret: &[u8],
    pool: &PgPool,
    streams: usize,
    seconds: u64,
    pid: u32,
) -> anyhow::Result<()> {
    let ids = sessions(pool, 1).await?;
    // PostgreSQL publishes a backend's counts up to 10 s after it goes idle:
    // wait those out before each measurement.
    let settle = Duration::from_secs(12);
    tokio::time::sleep(settle).await;
    let (none, statements_none) = transactions_per_s(pool, seconds).await?;
    let rss_before = rss_kib(pid)?;
    let mut channels = Vec::new();
    for _ in 0..streams.div_ceil(500) {
        channels.push(Channel::from_shared(addr.to_owned())?.connect().await?);
    }
    let mut open = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(250) {
        let mut opening = Vec::new();
        for &i in chunk {
            let token = coordinator_token(secret)?;
            let (channel, id) = (channels[i / 500].clone(), ids[0].clone());
            opening.push(tokio::spawn(open_watch(channel, token, id)));
        }
        for o in opening {
            open.push(o.await??);
        }
    }
    tokio::time::sleep(settle).await;
    let rss_after = rss_kib(pid)?;
    let (idle, statements_idle) = transactions_per_s(pool, seconds).await?;
    println!(
        "idle streams={} rss_before_kib={rss_before} rss_after_kib={rss_after} per_stream_kib={:.2} \
         db_tx_per_s_without_streams={none:.2} db_tx_per_s_with_streams={idle:.2} \
         (every replica on the database, over {seconds} s each)",
        open.len(),
        (rss_after.saturating_sub(rss_before)) as f64 / open.len() as f64,
    );
    for (label, statements) in [("without streams", statements_none), ("with streams", statements_idle)] {
        let total: i64 = statements.iter().map(|(calls, _)| calls).sum();
        println!(
            "  statements/s {label} (pg_stat_statements, every client): {:.2} in all",
            total as f64 / seconds as f64
        );
        for (calls, query) in statements.into_iter().take(12) {
            println!("    {:>7.2}  {}", calls as f64 / seconds as f64, query);
        }
    }
    Ok(())
}

/// Transactions/s of the database over `seconds`, less this measurement's
/// own, and the statements run meanwhile (calls, query; most called first)
/// where pg_stat_statements is loaded, so a figure can be told apart from
/// autovacuum's transactions, which count too.
async fn transactions_per_s(pool: &PgPool, seconds: u64) -> anyhow::Result<(f64, Vec<(i64, String)>)> {
    let tracked = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await
        .is_ok()
        && sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(pool)
            .await
            .is_ok();
    let before = transactions(pool).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = transactions(pool).await?;
    let statements = if tracked {
        sqlx::query_as(
            "SELECT calls, regexp_replace(left(query, 90), '\\s+', ' ', 'g') FROM pg_stat_statements \
             WHERE query NOT LIKE '%pg_stat%' ORDER BY calls DESC",
        )
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    Ok(((after - before - 1) as f64 / seconds as f64, statements))
}
