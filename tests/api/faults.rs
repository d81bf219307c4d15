//! Faults under load, on two replicas of the built binary: one replica
//! killed with SIGKILL mid-load, then PostgreSQL restarted mid-load.
//! Afterwards no watcher lost or repeated an event, no capacity limit was
//! ever exceeded, and the service serves again with no manual step.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration as StdDuration,
};

use mentorship::grpc::pb::{self, SessionStatus};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

const MENTOR_LIMIT: i64 = 2;
const SYSTEM_LIMIT: i64 = 5;

/// One worker's loop: on-demand sessions for its own mentee, taken through
/// start, pause, resume and complete (or cancelled while queued), on either
/// replica, until `stop`. Errors (a dead replica, a restarting database)
/// just move on.
async fn work(replicas: Vec<Caller>, mentee: Uuid, listings: Vec<Uuid>, stop: Arc<AtomicBool>) -> usize {
    let mut done = 0;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let c = replicas[n % replicas.len()]
            .clone()
            .with_request_id(&Uuid::new_v4().to_string());
        let created = c
            .create_session(pb::CreateSessionRequest {
                mentee_id: mentee.to_string(),
                listing_id: listings[n % listings.len()].to_string(),
                ..Default::default()
            })
            .await;
        let Ok(session) = created else {
            tokio::time::sleep(StdDuration::from_millis(20)).await;
            continue;
        };
        let c = c.with_request_id("");
        let ended = if session.status() == SessionStatus::Queued {
            c.cancel_session(&session.id, "not now").await.is_ok()
        } else {
            let _ = c.pause_session(&session.id, "").await;
            let _ = c.resume_session(&session.id).await;
            c.complete_session(&session.id, None).await.is_ok()
        };
        if !ended {
            // Whatever state it was left in, end it from the other replica.
            let other = replicas[(n + 1) % replicas.len()].clone();
            let _ = other.cancel_session(&session.id, "cleanup").await;
        }
        done += 1;
    }
    done
}

/// Follows WatchSessions on `replica`, resuming from its last cursor after
/// any error; records every (session, seq) it receives.
async fn watch(replica: Caller, got: Arc<Mutex<Vec<(String, i64)>>>, first_cursor: String, stop: Arc<AtomicBool>) {
    let mut cursor = first_cursor;
    while !stop.load(Ordering::Relaxed) {
        let opened = replica
            .watch_sessions(pb::WatchSessionsRequest {
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await;
        let Ok(mut stream) = opened else {
            tokio::time::sleep(StdDuration::from_millis(100)).await;
            continue;
        };
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                _ = tokio::time::sleep(StdDuration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return } else { continue }
                }
            };
            match next {
                Ok(Some(item)) => {
                    let e = item.event.expect("event");
                    got.lock().expect("lock").push((e.session_id, e.seq));
                    cursor = item.cursor;
                }
                _ => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_and_a_restarted_database_lose_no_event_and_break_no_limit() {
    let mut db = own_cluster().await;
    mentorship::devdb::ensure_database(&db.url("postgres"), "mentorship")
        .await
        .expect("database");
    let url = db.url("mentorship");
    let config = std::env::temp_dir().join(format!("mentorship-faults-{}.yaml", Uuid::new_v4()));
    std::fs::write(
        &config,
        format!(
            "session_management:\n  max_concurrent_sessions_per_mentor: {MENTOR_LIMIT}\n  \
             max_concurrent_sessions_system: {SYSTEM_LIMIT}\n  max_queue_size: 1000\n"
        ),
    )
    .expect("config");
    let env = [("MENTORSHIP_CONFIG", config.to_str().expect("utf8"))];
    let mut doomed = spawn_binary(&url, &env).await;
    let survivor = spawn_binary(&url, &env).await;
    let token = coordinator();
    let (a, b) = (doomed.as_(&token), survivor.as_(&token));

    // Three mentors, a listing each; a mentee per worker.
    let mut listings = Vec::new();
    for _ in 0..3 {
        let mentor = b
            .upsert_mentor(pb::Mentor {
                user_id: Uuid::new_v4().to_string(),
                display_name: "Grace".into(),
                skill_areas: vec!["rust".into()],
                accepting_sessions: true,
                timezone: "UTC".into(),
                ..Default::default()
            })
            .await
            .expect("mentor");
        let listing = b
            .upsert_listing(pb::Listing {
                mentor_id: mentor.id,
                title: "Pairing".into(),
                skill_area: "rust".into(),
                ..Default::default()
            })
            .await
            .expect("listing");
        listings.push(listing.id.parse::<Uuid>().expect("uuid"));
    }
    let mut mentees = Vec::new();
    for _ in 0..8 {
        let id = Uuid::new_v4();
        b.upsert_mentee(pb::Mentee {
            id: id.to_string(),
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .expect("mentee");
        mentees.push(id);
    }

    // The watcher on the survivor, with a cursor from a first event.
    let mut feed = b
        .watch_sessions(pb::WatchSessionsRequest::default())
        .await
        .expect("feed");
    let first = b
        .create_session(pb::CreateSessionRequest {
            mentee_id: mentees[0].to_string(),
            listing_id: listings[0].to_string(),
            ..Default::default()
        })
        .await
        .expect("first session");
    b.cancel_session(&first.id, "warm-up").await.expect("cancel");
    let first_item = feed.message().await.expect("item").expect("event");
    let got = Arc::new(Mutex::new(vec![(
        first_item.event.clone().expect("event").session_id,
        first_item.event.expect("event").seq,
    )]));
    drop(feed);
    let (stop, caught_up) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let watcher = tokio::spawn(watch(b.clone(), got.clone(), first_item.cursor, caught_up.clone()));

    // A monitor samples the slot holders throughout.
    let worst = Arc::new(AtomicI64::new(0));
    let monitor = {
        let (url, worst, stop) = (url.clone(), worst.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    while !stop.load(Ordering::Relaxed) {
                        let sample: Result<(i64, i64), _> = sqlx::query_as(
                            "SELECT count(*), COALESCE(max(n), 0) FROM (SELECT count(*) AS n FROM sessions \
                             WHERE status IN ('ACTIVE', 'PAUSED') GROUP BY mentor_id) m",
                        )
                        .fetch_one(&pool)
                        .await;
                        let system: Result<i64, _> =
                            sqlx::query_scalar("SELECT count(*) FROM sessions WHERE status IN ('ACTIVE', 'PAUSED')")
                                .fetch_one(&pool)
                                .await;
                        match (sample, system) {
                            (Ok((_, per_mentor)), Ok(system)) => {
                                assert!(per_mentor <= MENTOR_LIMIT, "a mentor held {per_mentor} slots");
                                assert!(system <= SYSTEM_LIMIT, "the system held {system} slots");
                                worst.fetch_max(system, Ordering::Relaxed);
                            }
                            _ => break, // the database is restarting: connect again
                        }
                        tokio::time::sleep(StdDuration::from_millis(20)).await;
                    }
                }
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        })
    };

    // The load, on both replicas.
    let replicas = vec![
        a.clone().with_timeout(StdDuration::from_secs(3)),
        b.clone().with_timeout(StdDuration::from_secs(3)),
    ];
    let workers: Vec<_> = mentees
        .iter()
        .map(|m| tokio::spawn(work(replicas.clone(), *m, listings.clone(), stop.clone())))
        .collect();

    // Faults: SIGKILL one replica, then restart PostgreSQL.
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    doomed.child.kill().expect("kill -9");
    doomed.child.wait().expect("reap");
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    db = tokio::task::spawn_blocking(move || {
        db.stop();
        std::thread::sleep(StdDuration::from_millis(500));
        db.restart().expect("restart PostgreSQL");
        db
    })
    .await
    .expect("join");
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = 0;
    for w in workers {
        done += w.await.expect("worker");
    }
    monitor.await.expect("no limit exceeded");
    assert!(worst.load(Ordering::Relaxed) > 0, "the load held slots");

    // The survivor serves with no manual step, and so does the killed
    // replica once started again.
    let served = b.get_session(&first.id).await.expect("the survivor serves");
    assert_eq!(served.status(), SessionStatus::Cancelled);
    let restarted = spawn_binary(&url, &env).await;
    restarted
        .as_(&token)
        .get_session(&first.id)
        .await
        .expect("the restarted replica serves");
    let after = b.create_session(pb::CreateSessionRequest {
        mentee_id: mentees[0].to_string(),
        listing_id: listings[0].to_string(),
        ..Default::default()
    });
    match after.await {
        Ok(s) => drop(b.cancel_session(&s.id, "done").await),
        // The mentee may still hold a slot from a call cut off by the faults.
        Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
    }

    // Every event in the table reached the watcher exactly once.
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    let stored: HashSet<(String, i64)> = sqlx::query_as::<_, (Uuid, i64)>("SELECT session_id, seq FROM session_events")
        .fetch_all(&pool)
        .await
        .expect("events")
        .into_iter()
        .map(|(id, seq)| (id.to_string(), seq))
        .collect();
    let mut received = Vec::new();
    for _ in 0..200 {
        received = got.lock().expect("lock").clone();
        if received.len() >= stored.len() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    caught_up.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    let distinct: HashSet<(String, i64)> = received.iter().cloned().collect();
    assert_eq!(distinct.len(), received.len(), "an event reached the watcher twice");
    let missing: Vec<_> = stored.difference(&distinct).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never arrived: {missing:?}",
        missing.len(),
        stored.len()
    );
    eprintln!(
        "faults: {done} sessions, {} events, worst {} slots",
        stored.len(),
        worst.load(Ordering::Relaxed)
    );
    assert!(
        done > 10 && stored.len() > 50,
        "{done} sessions, {} events",
        stored.len()
    );
    drop(db);
    let _ = std::fs::remove_file(&config);
}

/// Reported by an attack run: when a replica's existing database
/// connections went silent (no reset, no answer; a hung backend, a cut
/// network, an old primary behind a proxy) while new connections still
/// worked, GetSession answered DEADLINE_EXCEEDED to every call for minutes,
/// with health SERVING: the coalesced reads' slots waited on connections
/// nothing timed out. Now a read that gets no answer closes its connection
/// (`Rules::silent_connection`), an idle connection that does not answer
/// its ping is closed, and health says NOT_SERVING while this happens:
/// GetSession serves again on new connections with no restart.
#[tokio::test]
async fn a_replica_whose_connections_go_silent_serves_again_on_new_ones() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let app = spawn_app().await;
    let w = world(&app).await;
    let sessions = [
        scheduled(&app, &w, monday_at(6)).await,
        scheduled(&app, &w, monday_at(8)).await,
    ];
    let (proxy, replica) = replica_through_a_proxy(&app, true).await;
    let caller = Caller::new(&replica.channel, &coordinator()).with_timeout(StdDuration::from_secs(3));
    let mut health = HealthClient::new(replica.channel.clone());
    let serving = async |health: &mut HealthClient<tonic::transport::Channel>| {
        health
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status() == ServingStatus::Serving)
            .unwrap_or(false)
    };
    // Reads in flight all the time, as under load: the connections they use
    // were all used a moment ago, so none is pinged before it is handed out.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for s in sessions.iter().chain(&sessions) {
        let (caller, id, stop) = (caller.clone(), s.id.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                if caller.get_session(&id).await.is_err() {
                    failed += 1;
                }
            }
            failed
        }));
    }
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert!(serving(&mut health).await);

    proxy.silence_existing();
    // Health, followed every 100 ms from the silence on.
    let not_serving_seen = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (mut health, seen, stop) = (health.clone(), not_serving_seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = health.check(HealthCheckRequest::default()).await;
                if !status.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving) {
                    seen.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let stuck = (caller.clone(), sessions[0].id.clone());
    let stuck = stuck.0.get_session(&stuck.1).await.is_err();
    // GetSession serves again on new connections.
    let until = std::time::Instant::now() + StdDuration::from_secs(30);
    while caller.get_session(&sessions[0].id).await.is_err() {
        assert!(
            std::time::Instant::now() < until,
            "GetSession still fails 30 s after the connections went silent (stuck: {stuck:?})"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    // Health reported the silence: a probe runs every second and counts a
    // read that waited 5 s, or found its connection silent in the last 5 s.
    let look = std::time::Instant::now() + StdDuration::from_secs(4);
    while !not_serving_seen.load(Ordering::Relaxed) && std::time::Instant::now() < look {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(
        not_serving_seen.load(Ordering::Relaxed),
        "health went NOT_SERVING while the connections were silent (stuck: {stuck:?})"
    );
    // And then serves again, as every read does.
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    watcher.await.expect("health watcher");
    for s in &sessions {
        caller.get_session(&s.id).await.expect("reads answer again");
    }
    let back = std::time::Instant::now() + StdDuration::from_secs(15);
    while !serving(&mut health).await {
        assert!(std::time::Instant::now() < back, "health SERVING again");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

/// A replica of `app`'s database whose connections go through a
/// [`SilentProxy`], jobs stepped; `quick` shortens the statement timeout to
/// 1 s and the wait for a silent read to 2 s.
async fn replica_through_a_proxy(app: &TestApp, quick: bool) -> (crate::silent_proxy::SilentProxy, Replica) {
    let upstream = app
        .database_url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(host, _)| host.parse().ok())
        .expect("the database's address");
    let proxy = crate::silent_proxy::SilentProxy::start(upstream).await;
    let mut timeouts = mentorship::DbTimeouts::default();
    let mut rules = mentorship::app::Rules::default();
    if quick {
        timeouts.statement = StdDuration::from_secs(1);
        rules.silent_connection = StdDuration::from_secs(2);
    }
    let pool = mentorship::connect_with(&proxy.url(&app.database_url), 10, timeouts)
        .await
        .expect("a pool through the proxy");
    let background = mentorship::Background {
        sweeper: false,
        announce: true,
    };
    let replica = start_replica_on(pool, rules, background, transport()).await;
    (proxy, replica)
}

/// A mutation whose COMMIT's answer never arrives gets UNAVAILABLE with
/// reason COMMIT_OUTCOME_UNKNOWN, never INTERNAL, whether the server
/// committed or not. Retried with the same `request_id`, it answers the
/// first outcome when there was one, and makes the change when there was
/// none: either way the change happens exactly once.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_unknown_and_a_retry_makes_it_once() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let (proxy, replica) = replica_through_a_proxy(&app, false).await;
    let caller = Caller::new(&replica.channel, &coordinator());
    let drafts = async || -> Vec<String> {
        sqlx::query_scalar("SELECT id::text FROM bookings WHERE mentee_id = $1 ORDER BY id")
            .bind(w.mentee)
            .fetch_all(&app.pool)
            .await
            .expect("bookings")
    };
    for (round, delivered) in [(0, true), (1, false)] {
        let t = monday_at(9) + chrono::Duration::days(round);
        let request = booking_request(w.listing, w.mentee, t, t + chrono::Duration::hours(1));
        let once = caller.clone().with_request_id(&Uuid::new_v4().to_string());
        let before = drafts().await;
        proxy.cut_next_commit(delivered);
        let first = once.create_booking(request.clone()).await;
        let status = assert_status(first, Code::Unavailable, "COMMIT_OUTCOME_UNKNOWN");
        assert!(status.message().contains("same request_id"), "{}", status.message());
        let stored = drafts().await;
        assert_eq!(
            stored.len(),
            before.len() + usize::from(delivered),
            "committed: {delivered}"
        );
        let retried = once.create_booking(request).await.expect("the retry answers");
        let after = drafts().await;
        assert_eq!(
            after.len(),
            before.len() + 1,
            "made exactly once (committed first: {delivered})"
        );
        assert!(after.contains(&retried.id), "the retry answers the booking that exists");
        if delivered {
            assert_eq!(
                stored, after,
                "the retry changed nothing: it answered the first outcome"
            );
        }
    }
}
