//! History scenarios (issue 9): `seed` fills a database with bulk history,
//! `lists` times ListSessions pages per query shape and writes the same SQL
//! as pgbench scripts, `export` times one ExportSessions stream.

use std::{path::Path, time::Duration, time::Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use mentorship::{
    grpc::pb::{self, session_service_client::SessionServiceClient},
    store::seed::{Seed, seed as seed_rows},
};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

use super::{authed, ms, percentile};

/// `--scenario seed`: adds `sessions` sessions over `mentors` and `mentees`.
pub async fn seed(pool: &PgPool, sessions: i64, mentors: i64, mentees: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Seed {
        sessions,
        mentors,
        mentees,
        batch: 20_000,
    };
    let tag = seed_rows(pool, plan, Utc::now()).await?;
    // As autovacuum would leave a table at rest: statistics and the visibility map.
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    println!(
        "seeded {sessions} sessions, {mentors} mentors, {mentees} mentees (tag {tag}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One query shape of ListSessions.
struct Shape {
    name: String,
    request: pb::ListSessionsRequest,
    /// The statements the service runs for it, with this shape's values.
    sql: String,
}

/// The columns `store::sessions::list` reads.
const COLUMNS: &str = "id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status, \
    stage, config, queued_at, started_at, ended_at, active_banked_us, active_since, \
    paused_at, report, failure, cancel_reason, last_seq, version, created_at, updated_at";

/// Representative values: the median session's mentee and mentor, and a
/// week of start times around it.
async fn representative(pool: &PgPool) -> anyhow::Result<(Uuid, Uuid, DateTime<Utc>)> {
    let row: (Uuid, Uuid, DateTime<Utc>) = sqlx::query_as(
        "SELECT mentee_id, mentor_id, start_time FROM sessions ORDER BY created_at
         OFFSET (SELECT count(*) / 2 FROM sessions) LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .context("no sessions: seed first")?;
    Ok(row)
}

fn shapes(mentee: Uuid, mentor: Uuid, around: DateTime<Utc>) -> Vec<Shape> {
    let from = around - chrono::Duration::days(3);
    let to = around + chrono::Duration::days(4);
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let filters = [
        (
            "by mentee",
            pb::ListSessionsRequest {
                mentee_id: mentee.to_string(),
                ..Default::default()
            },
            format!("mentee_id = '{mentee}'"),
            "created_at",
        ),
        (
            "by mentor, COMPLETED or CANCELLED",
            pb::ListSessionsRequest {
                mentor_id: mentor.to_string(),
                statuses: vec![pb::SessionStatus::Completed as i32, pb::SessionStatus::Cancelled as i32],
                ..Default::default()
            },
            format!("mentor_id = '{mentor}' AND status = ANY('{{COMPLETED,CANCELLED}}')"),
            "created_at",
        ),
        (
            "status PAUSED",
            pb::ListSessionsRequest {
                statuses: vec![pb::SessionStatus::Paused as i32],
                ..Default::default()
            },
            "status = 'PAUSED'".to_owned(),
            "created_at",
        ),
        (
            "start time in one week",
            pb::ListSessionsRequest {
                start_time_from: Some(mentorship::grpc::convert::timestamp(from)),
                start_time_to: Some(mentorship::grpc::convert::timestamp(to)),
                ..Default::default()
            },
            format!("start_time >= '{}' AND start_time < '{}'", time(from), time(to)),
            "start_time",
        ),
    ];
    let mut out = Vec::new();
    for (name, request, predicate, column) in filters {
        for dir in ["asc", "desc"] {
            for total in [false, true] {
                let mut sql = format!(
                    "SELECT {COLUMNS} FROM sessions WHERE true AND {predicate} \
                     ORDER BY {column} {dir}, id {dir} LIMIT 21;\n"
                );
                if total {
                    sql.push_str(&format!("SELECT count(*) FROM sessions WHERE true AND {predicate};\n"));
                }
                out.push(Shape {
                    name: format!("{name}, {column} {dir}{}", if total { ", total_size" } else { "" }),
                    request: pb::ListSessionsRequest {
                        page_size: 20,
                        order_by: format!("{column} {dir}"),
                        include_total_size: total,
                        ..request.clone()
                    },
                    sql,
                });
            }
        }
    }
    out
}

/// `--scenario lists`: each shape `iterations` times from one caller, after
/// a warm-up; writes `NN.sql` per shape into `pgbench_dir` and prints the
/// plans of the page queries.
pub async fn lists(
    channel: Channel,
    token: &str,
    pool: &PgPool,
    iterations: usize,
    pgbench_dir: &Path,
) -> anyhow::Result<()> {
    let (mentee, mentor, around) = representative(pool).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(pool)
        .await?;
    std::fs::create_dir_all(pgbench_dir)?;
    let mut client = SessionServiceClient::new(channel);
    println!("ListSessions at {total} sessions, {iterations} sequential calls per shape, page_size 20\n");
    println!("| # | shape | rows | p50 ms | p99 ms | max ms |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: |");
    let shapes = shapes(mentee, mentor, around);
    for (i, shape) in shapes.iter().enumerate() {
        std::fs::write(pgbench_dir.join(format!("{i:02}.sql")), &shape.sql)?;
        let mut rows = 0;
        for _ in 0..20 {
            client.list_sessions(authed(token, shape.request.clone())).await?;
        }
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let page = client
                .list_sessions(authed(token, shape.request.clone()))
                .await?
                .into_inner();
            samples.push(start.elapsed());
            rows = page.sessions.len();
        }
        samples.sort();
        println!(
            "| {i:02} | {} | {rows} | {} | {} | {} |",
            shape.name,
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 99.0)),
            ms(*samples.last().unwrap_or(&Duration::ZERO)),
        );
    }
    println!();
    for (i, shape) in shapes.iter().enumerate().filter(|(_, s)| !s.request.include_total_size) {
        let page_sql = shape.sql.lines().next().unwrap_or_default().trim_end_matches(';');
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {page_sql}"
        )))
        .fetch_all(pool)
        .await?;
        println!("{i:02} {}:\n```\n{}\n```", shape.name, plan.join("\n"));
    }
    Ok(())
}

/// `--scenario export`: one ExportSessions stream of everything, read as
/// fast as the client can.
pub async fn export(channel: Channel, token: &str, format: pb::ExportFormat) -> anyhow::Result<()> {
    let mut client = SessionServiceClient::new(channel);
    let started = Instant::now();
    let request = pb::ExportSessionsRequest {
        format: format as i32,
        ..Default::default()
    };
    let mut stream = client.export_sessions(authed(token, request)).await?.into_inner();
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(msg) = stream.message().await? {
        bytes += msg.chunk.len();
        lines += msg.chunk.iter().filter(|b| **b == b'\n').count();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "export {format:?}: {lines} lines, {:.1} MiB in {secs:.2} s = {:.0} lines/s, {:.1} MiB/s",
        bytes as f64 / 1048576.0,
        lines as f64 / secs,
        bytes as f64 / 1048576.0 / secs
    );
    Ok(())
}
