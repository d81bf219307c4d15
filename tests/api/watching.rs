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
/// replica directly: with its notifier off and no backstop, a watcher on the
/// replica that made the changes still sees every one of them.
#[tokio::test]
async fn committed_changes_reach_watchers_on_the_same_replica_without_notify() {
    let mut app = spawn_with(0, notifications_only()).await;
    app.replicas
        .push(start_replica_with(&app.database_url, notifications_only(), silent(), Default::default()).await);
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;
    let mut stream = watch(&app, 0, &coordinator(), &s.id, Some(1)).await.expect("watch");
    let mut all = feed(&app, 0, &coordinator(), pb::WatchSessionsRequest::default())
        .await
        .expect("feed");
    start(&app, 0, &s.id).await;
    for i in 0..5 {
        stage(&app, 0, &s.id, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    complete(&app, 0, &s.id).await;
    let events = drain(&mut stream).await;
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 7);
    assert_eq!(
        seqs_from(&mut all, 2, 7).await,
        (2..=8).collect::<Vec<_>>(),
        "the feed too, in order"
    );
}

/// A replica that neither sweeps nor tells the other replicas of its commits:
/// one that died between its commits and its NOTIFY.
fn silent() -> mentorship::Background {
    mentorship::Background {
        sweeper: false,
        announce: false,
    }
}

/// No write transaction sends a NOTIFY: with the notifier off, a replica's
/// writes make no notification at all, and no trigger or function of the
/// schema calls pg_notify.
#[tokio::test]
async fn write_transactions_never_notify() {
    let mut app = spawn_with(0, notifications_only()).await;
    app.replicas
        .push(start_replica_with(&app.database_url, notifications_only(), silent(), Default::default()).await);
    let mut listener = sqlx::postgres::PgListener::connect(&app.database_url)
        .await
        .expect("listener");
    listener.listen("session_events").await.expect("LISTEN");
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    for i in 0..10 {
        stage(&app, 0, &s.id, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    complete(&app, 0, &s.id).await;
    let heard = tokio::time::timeout(StdDuration::from_millis(300), listener.recv()).await;
    assert!(heard.is_err(), "a write transaction notified: {heard:?}");
    let notifying: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prosrc ILIKE '%notify%'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("functions");
    assert_eq!(notifying, 0, "no function of the schema notifies");
    assert_eq!(app.count("session_events").await, 12, "the writes happened");
}

/// A replica that dies between its commit and its NOTIFY loses nothing: the
/// other replica's backstop reads the feed anyway, for both kinds of stream.
#[tokio::test]
async fn the_backstop_delivers_what_a_silent_replica_committed() {
    let rules = mentorship::app::Rules {
        watch_backstop: StdDuration::from_millis(100),
        ..Default::default()
    };
    let mut app = spawn_with(1, rules.clone()).await;
    app.replicas
        .push(start_replica_with(&app.database_url, rules, silent(), Default::default()).await);
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let mut stream = watch(&app, 0, &coordinator(), &s.id, Some(1)).await.expect("watch");
    let mut all = feed(&app, 0, &coordinator(), pb::WatchSessionsRequest::default())
        .await
        .expect("feed");
    for i in 0..5 {
        stage(&app, 1, &s.id, if i % 2 == 0 { "a" } else { "b" }).await;
    }
    complete(&app, 1, &s.id).await;
    let events = drain(&mut stream).await;
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 6);
    assert_eq!(seqs_from(&mut all, 2, 6).await, (2..=7).collect::<Vec<_>>());
}

/// Waits until the replica's feed reader has read every commit it knows of.
async fn caught_up(hub: &mentorship::watch::Hub) {
    let deadline = tokio::time::Instant::now() + READ_BOUND;
    while hub.feed_lag() > StdDuration::ZERO {
        assert!(tokio::time::Instant::now() < deadline, "the feed never caught up");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// One database read serves every stream of a replica; idle streams cost no
/// database work at all.
#[tokio::test]
async fn one_feed_read_serves_every_stream_and_idle_streams_read_nothing() {
    let app = spawn_with(1, notifications_only()).await;
    let hub = &app.replicas[0].app.hub;
    let w = world(&app).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(on_demand(&app, &world(&app).await, None).await.expect("create"));
    }
    let s = on_demand(&app, &w, None).await.expect("create");
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let mut stream = watch(&app, 0, &coordinator(), &s.id, None).await.expect("watch");
        assert!(matches!(
            next(&mut stream).await.and_then(|i| i.item),
            Some(Item::Session(_))
        ));
        watchers.push(stream);
    }
    let mut feeds = Vec::new();
    for _ in 0..20 {
        feeds.push(
            feed(&app, 0, &w.mentee_token(), pb::WatchSessionsRequest::default())
                .await
                .expect("feed"),
        );
    }
    // Idle: nothing commits, nothing is read. (The reader first finishes with
    // the commits above, which another test's open transaction may hold back.)
    caught_up(hub).await;
    let (reads, catch_ups) = (hub.feed_reads(), hub.catch_ups());
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(
        (hub.feed_reads(), hub.catch_ups()),
        (reads, catch_ups),
        "idle streams read nothing"
    );

    // Changes to sessions nobody watches, then one everybody watches.
    for other in &sessions {
        stage(&app, 0, &other.id, "x").await;
    }
    stage(&app, 0, &s.id, "y").await;
    for stream in &mut watchers {
        assert_eq!(event_of(next(stream).await.expect("event")).to_stage, "y");
    }
    // A feed starts at the horizon, which another test's open transaction
    // can hold back: the creation of the mentee's session may come first.
    // Every item is the mentee's own session, up to the stage change.
    for stream in &mut feeds {
        loop {
            let event = next(stream).await.expect("feed item").event.expect("event");
            assert_eq!(event.session_id, s.id, "the mentee sees only its own session");
            if event.to_stage == "y" {
                break;
            }
        }
    }
    let reads = hub.feed_reads() - reads;
    assert!(
        (1..40).contains(&reads),
        "{reads} feed reads for 4 commits and 40 streams: the reader reads per commit, not per stream"
    );
    assert_eq!(
        hub.catch_ups(),
        catch_ups,
        "live streams never read the database themselves"
    );
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

/// A stalled watcher holds up neither the writers nor the other streams: it
/// falls behind the replica's channel and catches up from the database when
/// read again, losing and repeating nothing.
#[tokio::test]
async fn a_stalled_watcher_never_slows_writers_and_then_receives_everything() {
    let rules = mentorship::app::Rules {
        watch_buffer: 8,
        ..Default::default()
    };
    let app = spawn_with(1, rules).await;
    let hub = app.replicas[0].app.hub.clone();
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    // The stalled watchers' client takes little before it stops reading, so
    // the server soon has to stop sending to them.
    let small_window = tonic::transport::Channel::from_shared(format!("http://{}", app.replicas[0].server.addr))
        .expect("uri")
        .initial_stream_window_size(Some(4096))
        .connect()
        .await
        .expect("connect");
    let stalled = Caller::new(&small_window, &coordinator());
    let mut stream = stalled.watch_session(&s.id, None).await.expect("watch");
    assert!(matches!(
        next(&mut stream).await.and_then(|i| i.item),
        Some(Item::Session(_))
    ));
    let filter = pb::WatchSessionsRequest {
        mentee_id: w.mentee.to_string(),
        ..Default::default()
    };
    let mut stalled_feed = stalled.watch_sessions(filter.clone()).await.expect("feed");
    // Another feed on the same replica, read as events come.
    let mut live = feed(&app, 0, &coordinator(), filter).await.expect("feed");
    let reader = tokio::spawn(async move { take_stages(&mut live, 1000).await.len() });
    // The watchers read nothing while a thousand events commit.
    let catch_ups = hub.catch_ups();
    let writer = app.coordinator();
    let mut ok = 0;
    for i in 0..1000 {
        let name = if i % 2 == 0 { "a" } else { "b" };
        let r = writer.advance_stage(&s.id, name).await;
        ok += usize::from(r.is_ok());
    }
    assert_eq!(ok, 1000, "every write completed normally");
    let live = tokio::time::timeout(READ_BOUND, reader)
        .await
        .expect("live feed stalled");
    assert_eq!(live.expect("live reader"), 1000, "the live feed kept up");
    complete(&app, 0, &s.id).await;
    let events = drain(&mut stream).await;
    assert_contiguous(&events, 2);
    assert_eq!(events.len(), 1001);
    let stages = take_stages(&mut stalled_feed, 1000).await;
    let seqs: Vec<i64> = stages.iter().map(|i| i.event.as_ref().expect("event").seq).collect();
    assert_eq!(
        seqs,
        (2..1002).collect::<Vec<_>>(),
        "the stalled feed: every event once, in order"
    );
    assert!(
        hub.catch_ups() > catch_ups,
        "the stalled streams caught up from the database"
    );
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

/// The seqs of the next `count` feed items from seq `first` on: a feed opened
/// without a cursor may begin with events committed just before it opened.
async fn seqs_from(stream: &mut Streaming<pb::WatchSessionsResponse>, first: i64, count: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let seq = next(stream).await.expect("feed item").event.expect("event").seq;
        if seq >= first || !seqs.is_empty() {
            seqs.push(seq);
        }
    }
    seqs
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
    // A well-formed cursor the feed never issued (beyond its horizon) would
    // silently skip everything: refused too.
    let ahead = feed(
        &app,
        0,
        &coordinator(),
        pb::WatchSessionsRequest {
            cursor: mentorship::app::watch::encode_cursor((i64::MAX / 2, 1)),
            ..Default::default()
        },
    )
    .await;
    let status = assert_status(ahead, Code::InvalidArgument, "INVALID_ARGUMENT");
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
    let hub = &app.replicas[0].app.hub;
    assert!(
        hub.feed_lag() >= StdDuration::from_millis(600),
        "the feed's lag shows the hold-up: {:?}",
        hub.feed_lag()
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
    assert_eq!(hub.feed_lag(), StdDuration::ZERO, "caught up");
}
