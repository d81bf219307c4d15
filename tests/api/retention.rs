//! Retention (SPEC §4.4): what expired goes with everything that hangs off
//! it, nothing else is touched, one replica purges at a time, and watchers of
//! live sessions never notice.

use chrono::Utc;
use mentorship::{
    app::Rules,
    grpc::pb::{self, SessionStatus},
    jobs::retention::{plan, purge_once},
    store::{
        retention::Purged,
        seed::{Seed, seed},
    },
};
use tonic::Code;

use crate::helpers::*;

/// Moves a session's end `days` into the past.
async fn ended_days_ago(app: &TestApp, session_id: &str, days: i32) {
    sqlx::query("UPDATE sessions SET ended_at = now() - make_interval(days => $2) WHERE id = $1::uuid")
        .bind(session_id)
        .bind(days)
        .execute(&app.pool)
        .await
        .expect("backdate session");
}

/// Moves a booking's last change `days` into the past.
async fn changed_days_ago(app: &TestApp, booking_id: &str, days: i32) {
    sqlx::query("UPDATE bookings SET updated_at = now() - make_interval(days => $2) WHERE id = $1::uuid")
        .bind(booking_id)
        .bind(days)
        .execute(&app.pool)
        .await
        .expect("backdate booking");
}

async fn rows_of(app: &TestApp, table: &str, column: &str, id: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE {column} = $1::uuid"
    )))
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn expired_history_goes_with_everything_that_hangs_off_it_and_nothing_else() {
    let app = spawn_with(1, roomy_rules()).await;
    let c = app.coordinator();
    let w = world(&app).await;
    let retention_days = app.replicas[0].app.rules.history.retention.num_days() as i32;
    assert_eq!(retention_days, 365, "the default");

    // A day past retention, a day short of it, and a live session whose
    // timestamps are older still.
    let old = on_demand(&app, &w, None).await.expect("create");
    c.complete_session(&old.id, None).await.expect("complete");
    ended_days_ago(&app, &old.id, retention_days + 1).await;
    let recent = on_demand(&app, &w, None).await.expect("create");
    c.cancel_session(&recent.id, "done").await.expect("cancel");
    ended_days_ago(&app, &recent.id, retention_days - 1).await;
    let live = on_demand(&app, &w, None).await.expect("create");
    sqlx::query("UPDATE sessions SET created_at = now() - interval '3 years', updated_at = now() - interval '3 years' WHERE id = $1::uuid")
        .bind(&live.id)
        .execute(&app.pool)
        .await
        .expect("backdate live");
    // Bookings that never got a session, past and short of retention, and a DRAFT older still.
    let start = monday_at(9) + chrono::Duration::days(21);
    let declined_old = draft(&app, &w, start, start + chrono::Duration::hours(1)).await;
    c.decline_booking(&declined_old.id, "no").await.expect("decline");
    changed_days_ago(&app, &declined_old.id, retention_days + 1).await;
    let cancelled_recent = draft(&app, &w, start, start + chrono::Duration::hours(1)).await;
    c.cancel_booking(&cancelled_recent.id, "no").await.expect("cancel");
    changed_days_ago(&app, &cancelled_recent.id, retention_days - 1).await;
    let open_draft = draft(&app, &w, start, start + chrono::Duration::hours(1)).await;
    changed_days_ago(&app, &open_draft.id, retention_days * 3).await;

    // The dry run reports exactly what goes, and removes nothing.
    let old_events = rows_of(&app, "session_events", "session_id", &old.id).await;
    let want = Purged {
        sessions: 1,
        session_events: old_events,
        assignments: 1,
        bookings: 2,
        booking_events: 1 + 2,
    };
    let replica = &app.replicas[0].app;
    assert_eq!(plan(replica).await.expect("plan"), want);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mentorship"))
        .args(["purge", "--dry-run"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run mentorship purge --dry-run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("would purge (older than 365 days): {want}")
    );
    assert!(c.get_session(&old.id).await.is_ok(), "a dry run removes nothing");

    // The purge removes exactly that.
    assert_eq!(purge_once(replica).await.expect("purge"), Some(want));
    assert_status(c.get_session(&old.id).await, Code::NotFound, "SESSION_NOT_FOUND");
    assert_status(
        c.get_booking(&old.booking_id).await,
        Code::NotFound,
        "BOOKING_NOT_FOUND",
    );
    assert_status(
        c.get_booking(&declined_old.id).await,
        Code::NotFound,
        "BOOKING_NOT_FOUND",
    );
    for (table, column, id) in [
        ("session_events", "session_id", &old.id),
        ("mentor_assignments", "session_id", &old.id),
        ("booking_events", "booking_id", &old.booking_id),
        ("booking_events", "booking_id", &declined_old.id),
    ] {
        assert_eq!(rows_of(&app, table, column, id).await, 0, "{table} of {id}");
    }
    for id in [&recent.id, &live.id] {
        let s = c.get_session(id).await.expect("kept");
        assert_eq!(
            event_log(&app, id).await.len() as i64,
            rows_of(&app, "session_events", "session_id", id).await
        );
        assert!(c.get_booking(&s.booking_id).await.is_ok());
    }
    assert_eq!(get_session(&app, &live.id).await.status(), SessionStatus::Active);
    for id in [&cancelled_recent.id, &open_draft.id] {
        assert!(c.get_booking(id).await.is_ok(), "booking {id} is kept");
    }
    assert_eq!(purge_once(replica).await.expect("again"), Some(Purged::default()));
}

#[tokio::test]
async fn two_replicas_purging_at_once_remove_each_row_once() {
    let rules = Rules {
        history: mentorship::app::History {
            purge_batch: 100,
            ..Rules::default().history
        },
        ..Rules::default()
    };
    let app = spawn_with(2, rules).await;
    seed(
        &app.pool,
        Seed {
            sessions: 2_000,
            mentors: 50,
            mentees: 500,
            batch: 2_000,
        },
        Utc::now(),
    )
    .await
    .expect("seed");
    sqlx::query("UPDATE sessions SET ended_at = ended_at - interval '400 days' WHERE ended_at IS NOT NULL")
        .execute(&app.pool)
        .await
        .expect("age");
    let terminal: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("terminal");
    let live = app.count("sessions").await - terminal;
    let want = plan(&app.replicas[0].app).await.expect("plan");
    assert_eq!(want.sessions, terminal);

    let (a, b) = tokio::join!(purge_once(&app.replicas[0].app), purge_once(&app.replicas[1].app));
    let mut total = Purged::default();
    for run in [a.expect("purge a"), b.expect("purge b")].into_iter().flatten() {
        total += run;
    }
    assert_eq!(total, want, "every expired row once, none twice");
    assert_eq!(app.count("sessions").await, live);
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions s WHERE s.last_seq <> (SELECT count(*) FROM session_events e WHERE e.session_id = s.id)
            OR NOT EXISTS (SELECT 1 FROM bookings b WHERE b.id = s.booking_id)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("check");
    assert_eq!(broken, 0, "live sessions keep every event and their booking");
}

#[tokio::test]
async fn a_purge_waits_for_the_lock_another_replica_holds() {
    let app = spawn_with(1, roomy_rules()).await;
    let c = app.coordinator();
    let w = world(&app).await;
    let old = on_demand(&app, &w, None).await.expect("create");
    c.complete_session(&old.id, None).await.expect("complete");
    ended_days_ago(&app, &old.id, 400).await;
    let replica = &app.replicas[0].app;
    // Another replica's batch is under way: it holds the purge lock.
    let mut other = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(5, 2)")
        .execute(&mut *other)
        .await
        .expect("lock");
    assert_eq!(
        purge_once(replica).await.expect("purge"),
        None,
        "it leaves the purge to the holder"
    );
    assert!(c.get_session(&old.id).await.is_ok(), "nothing removed meanwhile");
    // Its batch ends: the lock goes with its transaction.
    other.rollback().await.expect("rollback");
    let done = purge_once(replica).await.expect("purge").expect("ran");
    assert_eq!(done.sessions, 1);
}

#[tokio::test]
async fn a_purge_running_while_watchers_follow_other_sessions_loses_them_nothing() {
    let app = spawn_with(1, roomy_rules()).await;
    let c = app.coordinator();
    let w = world(&app).await;
    // History to purge.
    let mut old = Vec::new();
    for _ in 0..20 {
        let s = on_demand(&app, &w, None).await.expect("create");
        c.complete_session(&s.id, None).await.expect("complete");
        ended_days_ago(&app, &s.id, 400).await;
        old.push(s.id);
    }
    // A live session, watched on its own and through the feed.
    let live = on_demand(&app, &w, None).await.expect("create");
    let mut one = c.watch_session(&live.id, Some(1)).await.expect("watch");
    let mut feed = c
        .watch_sessions(pb::WatchSessionsRequest {
            mentor_id: w.mentor.to_string(),
            ..Default::default()
        })
        .await
        .expect("feed");

    let replica = app.replicas[0].app.clone();
    let purge = tokio::spawn(async move { purge_once(&replica).await });
    for stage in ["a", "b", "c", "d", "e"] {
        c.advance_stage(&live.id, stage).await.expect("stage");
    }
    c.complete_session(&live.id, None).await.expect("complete");
    assert_eq!(purge.await.expect("join").expect("purge").map(|p| p.sessions), Some(20));

    // The session's own stream: events 2..=7 in order, then the end.
    let mut seqs = Vec::new();
    while let Some(item) = tokio::time::timeout(std::time::Duration::from_secs(10), one.message())
        .await
        .expect("no stall")
        .expect("stream")
    {
        if let Some(pb::watch_session_response::Item::Event(e)) = item.item {
            seqs.push(e.seq);
        }
    }
    assert_eq!(seqs, [2, 3, 4, 5, 6, 7]);
    // The feed: every event of the live session, in order, whatever else it saw.
    let mut live_seqs = Vec::new();
    while live_seqs.last() != Some(&7) {
        let item = tokio::time::timeout(std::time::Duration::from_secs(10), feed.message())
            .await
            .expect("no stall")
            .expect("feed")
            .expect("open");
        let e = item.event.expect("event");
        if e.session_id == live.id {
            live_seqs.push(e.seq);
        }
    }
    let from = live_seqs.iter().position(|s| *s == 2).expect("seq 2");
    assert_eq!(live_seqs[from..], [2, 3, 4, 5, 6, 7]);
    for id in &old {
        assert_status(c.get_session(id).await, Code::NotFound, "SESSION_NOT_FOUND");
    }
}
