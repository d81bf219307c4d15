//! WatchSession and WatchSessions: lossless, resumable, cross-replica.

use std::{collections::HashSet, time::Duration as StdDuration};

use mentorship::grpc::pb::{self, SessionStatus, watch_session_response::Item};
use tonic::{Code, Streaming};
use uuid::Uuid;

use crate::helpers::*;

/// Bound on any single read from a stream, so a broken stream fails the test instead of hanging it.
const READ_BOUND: StdDuration = StdDuration::from_secs(15);

async fn watch(
    app: &TestApp,
    replica: usize,
    tok: &str,
    id: &str,
    after_seq: Option<i64>,
) -> Result<Streaming<pb::WatchSessionResponse>, tonic::Status> {
    app.on(replica, tok).watch_session(id, after_seq).await
}

async fn next<T>(stream: &mut Streaming<T>) -> Option<T> {
    tokio::time::timeout(READ_BOUND, stream.message())
        .await
        .expect("stream stalled")
        .expect("stream failed")
}

fn event_of(item: pb::WatchSessionResponse) -> pb::SessionEvent {
    match item.item {
        Some(Item::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Reads events until the stream ends cleanly; returns their seqs.
async fn drain(stream: &mut Streaming<pb::WatchSessionResponse>) -> Vec<pb::SessionEvent> {
    let mut events = Vec::new();
    while let Some(item) = next(stream).await {
        events.push(event_of(item));
    }
    events
}

async fn stage(app: &TestApp, replica: usize, id: &str, name: &str) {
    app.on(replica, &coordinator())
        .advance_stage(id, name)
        .await
        .expect("advance stage");
}

async fn start(app: &TestApp, replica: usize, id: &str) {
    app.on(replica, &coordinator()).start_session(id).await.expect("start");
}

async fn complete(app: &TestApp, replica: usize, id: &str) {
    app.on(replica, &coordinator())
        .complete_session(id, None)
        .await
        .expect("complete");
}

fn assert_contiguous(events: &[pb::SessionEvent], first: i64) {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let want: Vec<i64> = (first..first + seqs.len() as i64).collect();
    assert_eq!(seqs, want, "every event once, in order");
}

/// Rules whose backstop never fires during a test: only LISTEN/NOTIFY (and
/// the resync after a reconnect) can deliver.
fn notifications_only() -> mentorship::app::Rules {
    mentorship::app::Rules {
        watch_backstop: StdDuration::from_secs(3600),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_watcher_on_one_replica_sees_every_change_made_through_the_other() {
    let app = spawn_with(2, notifications_only()).await;
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;
    let mut stream = watch(&app, 0, &w.mentee_token(), &s.id, None).await.expect("watch");
    match next(&mut stream).await.and_then(|i| i.item) {
        Some(Item::Session(snapshot)) => assert_eq!(snapshot.status(), SessionStatus::Scheduled),
        other => panic!("the snapshot comes first, got {other:?}"),
    }
    start(&app, 1, &s.id).await;
    for i in 0..20 {
        stage(&app, 1, &s.id, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    complete(&app, 1, &s.id).await;
    let events = drain(&mut stream).await;
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 22);
    assert_eq!(
        events.last().expect("last").to_status(),
        SessionStatus::Completed,
        "the stream ends after the terminal event"
    );
}

/// The unit of work hands committed events to the watchers of its own
/// replica directly: with NOTIFY switched off and no backstop, a watcher on
/// the replica that made the changes still sees every one of them.
#[tokio::test]
async fn committed_changes_reach_watchers_on_the_same_replica_without_notify() {
    let app = spawn_with(1, notifications_only()).await;
    sqlx::query("ALTER TABLE session_events DISABLE TRIGGER session_events_notify")
        .execute(&app.pool)
        .await
        .expect("disable NOTIFY");
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;
    let mut stream = watch(&app, 0, &coordinator(), &s.id, Some(1)).await.expect("watch");
    start(&app, 0, &s.id).await;
    for i in 0..5 {
        stage(&app, 0, &s.id, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    complete(&app, 0, &s.id).await;
    let events = drain(&mut stream).await;
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 7);
}

#[tokio::test]
async fn watchers_get_every_event_once_when_the_listener_connection_is_killed() {
    let app = spawn_with(2, notifications_only()).await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let mut stream = watch(&app, 0, &coordinator(), &s.id, Some(1)).await.expect("watch");
    let mut killed = 0u64;
    for i in 0..40 {
        if i % 10 == 5 {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .fetch_one(&app.pool)
            .await
            .expect("terminate listeners");
            killed += n as u64;
        }
        stage(&app, 1, &s.id, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    complete(&app, 1, &s.id).await;
    let events = drain(&mut stream).await;
    assert!(killed >= 2, "listener connections were terminated ({killed})");
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 41);
}

#[tokio::test]
async fn a_watcher_that_disconnects_resumes_with_after_seq_losing_and_repeating_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let mut stream = watch(&app, 0, &w.mentor_token(), &s.id, None).await.expect("watch");
    assert!(matches!(
        next(&mut stream).await.and_then(|i| i.item),
        Some(Item::Session(_))
    ));
    for i in 0..5 {
        stage(&app, 0, &s.id, &format!("s{i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(event_of(next(&mut stream).await.expect("event")));
    }
    drop(stream);
    for i in 5..10 {
        stage(&app, 0, &s.id, &format!("s{i}")).await;
    }
    let last = seen.last().expect("seen").seq;
    let mut resumed = watch(&app, 0, &w.mentor_token(), &s.id, Some(last))
        .await
        .expect("resume");
    complete(&app, 0, &s.id).await;
    seen.extend(drain(&mut resumed).await);
    assert_contiguous(&seen, 2);
    assert_eq!(seen.len(), 11);

    // Resuming a finished session after its last event ends at once, cleanly.
    let mut done = watch(&app, 0, &w.mentor_token(), &s.id, Some(12))
        .await
        .expect("resume at end");
    assert!(next(&mut done).await.is_none());
}

#[tokio::test]
async fn a_stalled_watcher_never_slows_writers_and_then_receives_everything() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let mut stream = watch(&app, 0, &coordinator(), &s.id, None).await.expect("watch");
    assert!(matches!(
        next(&mut stream).await.and_then(|i| i.item),
        Some(Item::Session(_))
    ));
    // The watcher reads nothing while a thousand events commit.
    let writer = app.coordinator();
    let mut ok = 0;
    for i in 0..1000 {
        let name = if i % 2 == 0 { "a" } else { "b" };
        let r = writer.advance_stage(&s.id, name).await;
        ok += usize::from(r.is_ok());
    }
    assert_eq!(ok, 1000, "every write completed normally");
    complete(&app, 0, &s.id).await;
    let events = drain(&mut stream).await;
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 1001);
}

#[tokio::test]
async fn watch_session_access_rules() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;
    for tok in [w.mentee_token(), w.mentor_token(), coordinator(), service()] {
        let mut stream = watch(&app, 0, &tok, &s.id, None).await.expect("allowed");
        assert!(next(&mut stream).await.is_some());
    }
    let stranger = token(&["mentee"], Uuid::new_v4(), None);
    assert_eq!(
        watch(&app, 0, &stranger, &s.id, None).await.expect_err("denied").code(),
        Code::PermissionDenied
    );
    let other_mentor = token(&["mentor"], Uuid::new_v4(), Some(Uuid::new_v4()));
    assert_eq!(
        watch(&app, 0, &other_mentor, &s.id, None)
            .await
            .expect_err("denied")
            .code(),
        Code::PermissionDenied
    );
    let unknown = watch(&app, 0, &coordinator(), &Uuid::new_v4().to_string(), None).await;
    assert_status(unknown, Code::NotFound, "SESSION_NOT_FOUND");
    assert_eq!(
        watch(&app, 0, "", &s.id, None).await.expect_err("no token").code(),
        Code::Unauthenticated
    );
    let bad = watch(&app, 0, &coordinator(), "nope", None).await;
    assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
}

async fn feed(
    app: &TestApp,
    replica: usize,
    tok: &str,
    req: pb::WatchSessionsRequest,
) -> Result<Streaming<pb::WatchSessionsResponse>, tonic::Status> {
    app.on(replica, tok).watch_sessions(req).await
}

/// Reads feed items until `count` STAGE_CHANGED events arrived; returns those.
async fn take_stages(
    stream: &mut Streaming<pb::WatchSessionsResponse>,
    count: usize,
) -> Vec<pb::WatchSessionsResponse> {
    let mut items = Vec::new();
    while items.len() < count {
        let item = next(stream).await.expect("feed item");
        if item
            .event
            .as_ref()
            .is_some_and(|e| e.r#type() == pb::SessionEventType::StageChanged)
        {
            items.push(item);
        }
    }
    items
}

/// Reads the next `count` feed items.
async fn take(stream: &mut Streaming<pb::WatchSessionsResponse>, count: usize) -> Vec<pb::WatchSessionsResponse> {
    let mut items = Vec::new();
    while items.len() < count {
        items.push(next(stream).await.expect("feed item"));
    }
    items
}

#[tokio::test]
async fn the_feed_filters_by_participant_and_resumes_from_a_cursor_across_replicas() {
    let app = spawn_replicas(2).await;
    let a = world(&app).await;
    let b = world(&app).await;
    let sa = on_demand(&app, &a, None).await.expect("a");
    let sb = on_demand(&app, &b, None).await.expect("b");

    // A mentee's feed shows only its own sessions; the coordinator filters by mentee.
    let mut mine = feed(&app, 0, &a.mentee_token(), pb::WatchSessionsRequest::default())
        .await
        .expect("feed");
    let mut coord = feed(
        &app,
        1,
        &coordinator(),
        pb::WatchSessionsRequest {
            mentee_id: b.mentee.to_string(),
            ..Default::default()
        },
    )
    .await
    .expect("feed");
    for i in 0..5 {
        stage(&app, i % 2, &sa.id, &format!("a{i}")).await;
        stage(&app, (i + 1) % 2, &sb.id, &format!("b{i}")).await;
    }
    // A feed started without a cursor may begin with events committed just
    // before the call (see ARCHITECTURE.md); count from the stage changes on.
    let got_a = take_stages(&mut mine, 5).await;
    assert!(
        got_a
            .iter()
            .all(|i| i.event.as_ref().expect("event").session_id == sa.id)
    );
    let got_b = take_stages(&mut coord, 5).await;
    assert!(
        got_b
            .iter()
            .all(|i| i.event.as_ref().expect("event").session_id == sb.id)
    );
    let seqs: Vec<i64> = got_b.iter().map(|i| i.event.as_ref().expect("event").seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6]);

    // Disconnect after two items; resume from the second's cursor on the other replica.
    let only_a = || pb::WatchSessionsRequest {
        mentee_id: a.mentee.to_string(),
        ..Default::default()
    };
    let after_six = got_a.last().expect("a item").cursor.clone();
    let mut all = feed(
        &app,
        0,
        &coordinator(),
        pb::WatchSessionsRequest {
            cursor: after_six,
            ..only_a()
        },
    )
    .await
    .expect("feed");
    for i in 5..8 {
        stage(&app, 1, &sa.id, &format!("a{i}")).await;
    }
    let first_two = take(&mut all, 2).await;
    drop(all);
    for i in 8..12 {
        stage(&app, 0, &sa.id, &format!("a{i}")).await;
    }
    let cursor = first_two[1].cursor.clone();
    let mut resumed = feed(&app, 1, &coordinator(), pb::WatchSessionsRequest { cursor, ..only_a() })
        .await
        .expect("resume");
    let rest = take(&mut resumed, 5).await;
    let keys: Vec<(String, i64)> = first_two
        .iter()
        .chain(rest.iter())
        .map(|i| {
            let e = i.event.as_ref().expect("event");
            (e.session_id.clone(), e.seq)
        })
        .collect();
    let unique: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), keys.len(), "nothing repeated: {keys:?}");
    assert!(keys.iter().all(|(id, _)| *id == sa.id));
    let seqs: Vec<i64> = keys.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [7, 8, 9, 10, 11, 12, 13], "nothing lost across the reconnect");

    // The statuses filter selects events by the status they left their session in.
    complete(&app, 0, &sb.id).await;
    let mut completed = feed(
        &app,
        0,
        &coordinator(),
        pb::WatchSessionsRequest {
            statuses: vec![SessionStatus::Completed as i32],
            cursor: first_two[1].cursor.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("feed");
    let items = take(&mut completed, 1).await;
    assert_eq!(items[0].event.as_ref().expect("event").session_id, sb.id);

    // Bad cursors are bad input.
    let bad = feed(
        &app,
        0,
        &coordinator(),
        pb::WatchSessionsRequest {
            cursor: "zzz".into(),
            ..Default::default()
        },
    )
    .await;
    let status = assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["cursor"]);
    let unknown_role = feed(
        &app,
        0,
        &token(&["guest"], Uuid::new_v4(), None),
        pb::WatchSessionsRequest::default(),
    )
    .await;
    assert_eq!(unknown_role.expect_err("denied").code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_feed_never_moves_past_an_event_that_commits_later() {
    let app = spawn_with(1, notifications_only()).await;
    let a = world(&app).await;
    let b = world(&app).await;
    let sa = on_demand(&app, &a, None).await.expect("a");
    let sb = on_demand(&app, &b, None).await.expect("b");
    let mut all = feed(&app, 0, &coordinator(), pb::WatchSessionsRequest::default())
        .await
        .expect("feed");

    // An older transaction appends an event to session A and stays open…
    let mut held = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *held)
        .await
        .expect("xid");
    let seq: i64 =
        sqlx::query_scalar("UPDATE sessions SET last_seq = last_seq + 1 WHERE id = $1::uuid RETURNING last_seq")
            .bind(&sa.id)
            .fetch_one(&mut *held)
            .await
            .expect("lock A");
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, type, from_status, to_status, actor_kind, reason)
         VALUES ($1::uuid, $2, 'STAGE_CHANGED', 'ACTIVE', 'ACTIVE', 'SYSTEM', 'held')",
    )
    .bind(&sa.id)
    .bind(seq)
    .execute(&mut *held)
    .await
    .expect("append to A");

    // …while a newer one commits an event of session B.
    stage(&app, 0, &sb.id, "newer").await;
    // A feed without a cursor may begin with events committed just before
    // it opened (ARCHITECTURE.md); only the stage changes are about the order.
    let early = tokio::time::timeout(StdDuration::from_millis(700), take_stages(&mut all, 1)).await;
    assert!(
        early.is_err(),
        "nothing is delivered past the open transaction: {early:?}"
    );

    held.commit().await.expect("commit A");
    let items = take_stages(&mut all, 2).await;
    let order: Vec<(String, i64)> = items
        .iter()
        .map(|i| {
            let e = i.event.as_ref().expect("event");
            (e.session_id.clone(), e.seq)
        })
        .collect();
    assert_eq!(
        order,
        [(sa.id.clone(), seq), (sb.id.clone(), 2)],
        "feed order is commit-safe"
    );
}
