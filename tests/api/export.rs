//! ExportSessions (SPEC §4.4): every session of a filter, as CSV or JSON
//! lines, equal field by field to what ListSessions returns; bounded per
//! caller; stopped when the client goes away.

use chrono::{SecondsFormat, Utc};
use mentorship::{
    app::export::CSV_COLUMNS,
    grpc::pb::{self, SessionStatus},
    store::seed::{Seed, seed},
};
use serde_json::Value;
use tonic::{Code, Streaming};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::*;

const SESSIONS: i64 = 10_000;

async fn seeded(app: &TestApp) {
    let plan = Seed {
        sessions: SESSIONS,
        mentors: 100,
        mentees: 1_000,
        batch: 5_000,
    };
    seed(&app.pool, plan, Utc::now()).await.expect("seed");
}

/// Every session the caller sees, oldest first, through ListSessions.
async fn list_all(caller: &Caller, mentee_id: &str) -> Vec<pb::Session> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = caller
            .list_sessions(pb::ListSessionsRequest {
                page_size: 100,
                page_token: token,
                mentee_id: mentee_id.to_owned(),
                order_by: "created_at asc".into(),
                ..Default::default()
            })
            .await
            .expect("list");
        all.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

async fn open_export(
    app: &TestApp,
    token: &str,
    format: pb::ExportFormat,
    mentee_id: &str,
) -> Result<Streaming<pb::ExportSessionsResponse>, tonic::Status> {
    let req = pb::ExportSessionsRequest {
        format: format as i32,
        mentee_id: mentee_id.to_owned(),
        ..Default::default()
    };
    Ok(app.sessions().export_sessions(authed(token, req)).await?.into_inner())
}

async fn export(app: &TestApp, token: &str, format: pb::ExportFormat, mentee_id: &str) -> Vec<u8> {
    let mut stream = open_export(app, token, format, mentee_id).await.expect("export");
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await.expect("chunk") {
        assert!(msg.chunk.ends_with(b"\n"), "every chunk is whole lines");
        out.extend(msg.chunk);
    }
    out
}

fn time_text(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|_| ts_of(t).to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// What a session's export must say, column by column, derived from the
/// ListSessions view. `None`: not comparable here (the active time of an
/// ACTIVE session grows while the test runs; last_seq and the config are
/// checked apart).
fn expected(s: &pb::Session) -> Vec<(&'static str, Option<String>)> {
    let status = s
        .status()
        .as_str_name()
        .trim_start_matches("SESSION_STATUS_")
        .to_owned();
    let active = s.active_duration.expect("active_duration");
    let report = s.report.clone().unwrap_or_default();
    vec![
        ("id", Some(s.id.clone())),
        ("booking_id", Some(s.booking_id.clone())),
        ("listing_id", Some(s.listing_id.clone())),
        ("mentor_id", Some(s.mentor_id.clone())),
        ("mentee_id", Some(s.mentee_id.clone())),
        ("status", Some(status)),
        ("stage", Some(s.stage.clone())),
        ("start_time", Some(time_text(&s.start_time))),
        ("end_time", Some(time_text(&s.end_time))),
        ("template_id", Some(s.config.clone().expect("config").template_id)),
        ("queued_at", None),
        ("started_at", Some(time_text(&s.started_at))),
        ("ended_at", Some(time_text(&s.ended_at))),
        (
            "active_duration_us",
            (s.status() != SessionStatus::Active)
                .then(|| (active.seconds * 1_000_000 + i64::from(active.nanos) / 1000).to_string()),
        ),
        ("cancel_reason", Some(s.cancel_reason.clone())),
        ("created_at", Some(time_text(&s.created_at))),
        ("updated_at", Some(time_text(&s.updated_at))),
        ("etag", Some(s.etag.clone())),
        ("last_seq", None),
        ("version", Some(s.etag.clone())),
        ("config", None),
        ("report_summary", Some(report.summary)),
        (
            "report_overall_score",
            Some(report.overall_score.map(|n| n.to_string()).unwrap_or_default()),
        ),
        (
            "failure_error_message",
            Some(s.failure.clone().map(|f| f.error_message).unwrap_or_default()),
        ),
    ]
}

/// Compares one exported row (column → text) with the listed session.
fn compare(row: &dyn Fn(&str) -> String, s: &pb::Session) {
    for (column, want) in expected(s) {
        if let Some(want) = want {
            assert_eq!(row(column), want, "session {} column {column}", s.id);
        }
    }
    let config: Value = serde_json::from_str(&row("config")).expect("config JSON");
    let listed = s.config.clone().expect("config");
    let max = listed.max_duration.expect("max_duration").seconds;
    assert_eq!(config["max_duration_secs"], Value::from(max), "session {}", s.id);
}

/// A JSON value as the CSV cell it would be.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn ten_thousand_sessions_export_as_csv_and_json_lines_exactly_as_listed() {
    let app = spawn_app().await;
    seeded(&app).await;
    let c = app.coordinator();
    // One session whose text needs CSV quoting: a comma, quotes, a line break.
    let w = world(&app).await;
    let tricky = on_demand(&app, &w, None).await.expect("create");
    c.cancel_session(&tricky.id, "moved, \"again\"\nsee notes")
        .await
        .expect("cancel");
    let listed = list_all(&c, "").await;
    assert_eq!(listed.len(), SESSIONS as usize + 1);
    assert_eq!(
        listed.last().map(|s| s.cancel_reason.as_str()),
        Some("moved, \"again\"\nsee notes")
    );
    let statuses: std::collections::BTreeSet<i32> = listed.iter().map(|s| s.status).collect();
    let ties = listed.windows(2).filter(|p| p[0].created_at == p[1].created_at).count();
    assert!(ties > 1_000, "keyset pages meet equal created_at values ({ties} ties)");
    assert_eq!(statuses.len(), 7, "every status is exported");

    // CSV: RFC 4180 with a header, parsed back by a CSV reader.
    let text = export(&app, &coordinator(), pb::ExportFormat::Csv, "").await;
    let mut reader = csv::Reader::from_reader(text.as_slice());
    let header: Vec<String> = reader.headers().expect("header").iter().map(str::to_owned).collect();
    assert_eq!(header, CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.len(), listed.len());
    for (row, s) in rows.iter().zip(&listed) {
        let at = |column: &str| {
            let i = CSV_COLUMNS.iter().position(|c| *c == column).expect("column");
            row[i].to_owned()
        };
        compare(&at, s);
    }

    // JSON lines: one object per session, with its events.
    let text = export(&app, &coordinator(), pb::ExportFormat::JsonLines, "").await;
    let lines: Vec<Value> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), listed.len());
    for (i, (line, s)) in lines.iter().zip(&listed).enumerate() {
        let at = |column: &str| match column {
            "report_summary" => cell(&line["report"]["summary"]),
            "report_overall_score" => cell(&line["report"]["overall_score"]),
            "failure_error_message" => cell(&line["failure"]["error_message"]),
            "config" => line["config"].to_string(),
            other => cell(&line[other]),
        };
        compare(&at, s);
        let events = line["events"].as_array().expect("events");
        assert_eq!(Some(events.len() as i64), line["last_seq"].as_i64());
        // The events themselves, against ListSessionEvents, for every 250th session.
        if i % 250 == 0 {
            let stored = event_log(&app, &s.id).await;
            assert_eq!(events.len(), stored.len());
            for (e, want) in events.iter().zip(&stored) {
                assert_eq!(e["seq"].as_i64(), Some(want.seq));
                assert_eq!(
                    cell(&e["to_status"]),
                    want.to_status().as_str_name().trim_start_matches("SESSION_STATUS_")
                );
                assert_eq!(cell(&e["occurred_at"]), time_text(&want.occurred_at));
                assert_eq!(
                    cell(&e["actor"]["kind"]),
                    want.actor
                        .clone()
                        .expect("actor")
                        .kind()
                        .as_str_name()
                        .trim_start_matches("ACTOR_KIND_")
                );
            }
        }
    }
}

#[tokio::test]
async fn participants_export_only_their_own_sessions() {
    let app = spawn_app().await;
    seeded(&app).await;
    let mentee = list_all(&app.coordinator(), "").await[0].mentee_id.clone();
    let own = list_all(&app.coordinator(), &mentee).await;
    assert!(!own.is_empty());
    let mentee_token = token(&["mentee"], mentee.parse().expect("uuid"), None);
    // No filter: the mentee still gets only its own.
    let text = export(&app, &mentee_token, pb::ExportFormat::Csv, "").await;
    let mut reader = csv::Reader::from_reader(text.as_slice());
    let ids: Vec<String> = reader.records().map(|r| r.expect("row")[0].to_owned()).collect();
    let want: Vec<String> = own.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, want);
    // Someone else's filter gives nothing of theirs.
    let other = Uuid::new_v4().to_string();
    let text = export(&app, &mentee_token, pb::ExportFormat::JsonLines, &other).await;
    assert!(text.is_empty());
    let err = open_export(&app, &mentee_token, pb::ExportFormat::Csv, "nope").await;
    assert_status(err, Code::InvalidArgument, "INVALID_ARGUMENT");
}

/// Backends of this test's database idle inside a transaction.
async fn idle_in_transaction(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn exports_are_capped_per_caller_and_stop_when_the_client_goes_away() {
    let app = spawn_app().await;
    seeded(&app).await;
    let me = token(&["coordinator"], Uuid::new_v4(), None);
    // Two exports that read one chunk each and then stall: the server waits on them.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = open_export(&app, &me, pb::ExportFormat::JsonLines, "")
            .await
            .expect("open");
        s.message().await.expect("chunk").expect("first chunk");
        stalled.push(s);
    }
    let err = open_export(&app, &me, pb::ExportFormat::Csv, "").await;
    let status = assert_status(err, Code::ResourceExhausted, "TOO_MANY_EXPORTS");
    let info = status.get_details_error_info().expect("info");
    assert_eq!(info.metadata.get("maximum").map(String::as_str), Some("2"));
    assert_eq!(info.metadata.get("current").map(String::as_str), Some("2"));
    // Another caller is not affected.
    assert!(
        open_export(&app, &coordinator(), pb::ExportFormat::Csv, "")
            .await
            .is_ok()
    );
    // The stalled exports hold no transaction open while they wait.
    assert_eq!(idle_in_transaction(&app).await, 0);

    // The clients go away: their exports stop and give their permits back.
    drop(stalled);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut reopened = Vec::new();
    while reopened.len() < 2 {
        match open_export(&app, &me, pb::ExportFormat::Csv, "").await {
            Ok(s) => reopened.push(s),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the abandoned exports never stopped"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn shutdown_ends_an_export_with_unavailable_at_once() {
    let app = spawn_app().await;
    seeded(&app).await;
    // A client that reads one chunk and stalls.
    let mut stream = open_export(&app, &coordinator(), pb::ExportFormat::JsonLines, "")
        .await
        .expect("open");
    stream.message().await.expect("chunk").expect("first chunk");
    app.replicas[0].server.trigger().cancel();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a cut-off export must not end as if complete"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the export ends at once, not after the shutdown grace");
    assert_eq!(ended.code(), Code::Unavailable);
    assert_eq!(
        ended.get_details_error_info().map(|i| i.reason),
        Some("UNAVAILABLE".to_owned())
    );
}
