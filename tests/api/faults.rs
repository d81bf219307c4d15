//! Faults under load, on two replicas of the built binary: one replica
//! killed with SIGKILL mid-load, then PostgreSQL crash-restarted mid-load
//! (immediate shutdown, recovery from the WAL). The history checker
//! (`checker`) then holds every call against the stored logs and what the
//! watchers received: no acknowledged change lost, none made twice, no limit
//! exceeded at any point, every timer fired once, every event delivered
//! once in order. The service serves again with no manual step.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration as StdDuration,
};

use mentorship::grpc::pb::{self, SessionStatus};
use tonic::Code;
use uuid::Uuid;

use crate::{checker, helpers::*};

const MENTOR_LIMIT: i64 = 2;
const MENTEE_LIMIT: i64 = 2;
const SYSTEM_LIMIT: i64 = 5;
/// 0.001 h: 3.6 s.
const PAUSE_TIMEOUT: StdDuration = StdDuration::from_millis(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_and_a_crashed_database_lose_no_acknowledged_change_and_break_no_limit() {
    // Commits are on disk before they are acknowledged, as in production:
    // the test crashes the server.
    let mut db = own_crash_safe_cluster().await;
    mentorship::devdb::ensure_database(&db.url("postgres"), "mentorship")
        .await
        .expect("database");
    let url = db.url("mentorship");
    let config = std::env::temp_dir().join(format!("mentorship-faults-{}.yaml", Uuid::new_v4()));
    std::fs::write(
        &config,
        format!(
            "session_management:\n  max_concurrent_sessions_per_mentor: {MENTOR_LIMIT}\n  \
             max_concurrent_sessions_per_junior: {MENTEE_LIMIT}\n  \
             max_concurrent_sessions_system: {SYSTEM_LIMIT}\n  max_queue_size: 1000\n  \
             pause_timeout_hours: 0.001\n"
        ),
    )
    .expect("config");
    let env = [("MENTORSHIP_CONFIG", config.to_str().expect("utf8"))];
    let mut doomed = spawn_binary(&url, &env).await;
    let survivor = spawn_binary(&url, &env).await;
    let sub = Uuid::new_v4();
    let token = token(&["coordinator"], sub, None);
    let (a, b) = (doomed.as_(&token), survivor.as_(&token));

    // Three mentors, a listing each; a mentee per worker.
    let (listings, mentees) = checker::world(&b, 3, 0, 8).await;

    // The watcher on the survivor, from before the first session.
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let from = checker::start_position(&b).await;
    let watcher = tokio::spawn(checker::follow(b.clone(), from, got.clone(), stop_watching.clone()));
    // And a REST client's, over Server-Sent Events.
    let base = format!("http://{}", survivor.addr);
    let sse_got = Arc::new(Mutex::new(Vec::new()));
    let from = checker::sse_start_position(&base, &token).await;
    let sse = tokio::spawn(checker::follow_sse(
        base,
        token.clone(),
        from,
        sse_got.clone(),
        stop_watching.clone(),
    ));

    // The load, on both replicas, every call with a request_id.
    let rec = checker::Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    // WatchSession followers on the survivor, one session after another.
    let session_watcher = tokio::spawn(checker::follow_sessions(b.clone(), rec.clone(), stop_watching.clone()));
    let replicas = vec![
        a.clone().with_timeout(StdDuration::from_secs(3)),
        b.clone().with_timeout(StdDuration::from_secs(3)),
    ];
    let workers: Vec<_> = mentees
        .iter()
        .enumerate()
        .map(|(i, m)| {
            tokio::spawn(checker::work(
                rec.clone(),
                i,
                replicas.clone(),
                *m,
                listings.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Faults: SIGKILL one replica, then crash PostgreSQL and start it again.
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    let killed_at = std::time::Instant::now();
    doomed.child.kill().expect("kill -9");
    doomed.child.wait().expect("reap");
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    let crashed_at = std::time::Instant::now();
    db = tokio::task::spawn_blocking(move || {
        db.crash();
        std::thread::sleep(StdDuration::from_millis(500));
        db.restart().expect("restart PostgreSQL");
        db
    })
    .await
    .expect("join");
    tokio::time::sleep(StdDuration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let ended_at = std::time::Instant::now();

    // The survivor serves with no manual step, and so does the killed
    // replica once started again.
    let restarted = spawn_binary(&url, &env).await;
    let (r, extra) = (restarted.as_(&token), Uuid::new_v4());
    r.upsert_mentee(pb::Mentee {
        id: extra.to_string(),
        display_name: "Ada".into(),
        ..Default::default()
    })
    .await
    .expect("the restarted replica serves");
    let after = r
        .create_session(pb::CreateSessionRequest {
            mentee_id: extra.to_string(),
            listing_id: listings[0].to_string(),
            ..Default::default()
        })
        .await
        .expect("the restarted replica takes writes");
    assert_ne!(after.status(), SessionStatus::Unspecified);
    b.get_session(&after.id).await.expect("the survivor serves");

    // Quiet: the pause timers fire, the watcher catches up.
    tokio::time::sleep(PAUSE_TIMEOUT + StdDuration::from_secs(6)).await;
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM session_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    for _ in 0..200 {
        if got.lock().expect("got").len() as i64 >= stored && sse_got.lock().expect("got").len() as i64 >= stored {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    stop_watching.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    sse.await.expect("SSE watcher");
    let sessions_followed = session_watcher.await.expect("WatchSession follower");
    // Some session was followed live through each fault.
    for (fault, from, to) in [
        ("the replica's kill", killed_at, crashed_at),
        ("the database's crash", crashed_at, ended_at),
    ] {
        assert!(
            checker::received_within(&sessions_followed, from, to),
            "WatchSession received nothing through {fault}; what it followed, from the fault on:\n{}",
            checker::followed_around(&sessions_followed, from)
        );
    }
    let received = got.lock().expect("got").clone();
    let sse_received = sse_got.lock().expect("got").clone();
    let counts = checker::check(
        &rec.ops(),
        checker::Observed {
            pool: &pool,
            caller: sub,
            mentees: &mentees,
            watchers: vec![
                ("the watcher on the survivor".into(), received),
                ("the SSE watcher on the survivor".into(), sse_received),
            ],
            session_watchers: vec![("the WatchSession follower on the survivor".into(), sessions_followed)],
            webhook: None,
            limits: checker::Limits {
                per_mentor: MENTOR_LIMIT,
                per_mentee: MENTEE_LIMIT,
                system: SYSTEM_LIMIT,
                pause_timeout: PAUSE_TIMEOUT,
            },
        },
    )
    .await
    .unwrap_or_else(|report| panic!("the history does not check:\n{report}"));
    eprintln!("faults: {counts:?}");
    for (fault, window) in [
        ("kill -9 of a replica", rec.window(killed_at, crashed_at)),
        ("PostgreSQL crash-restart", rec.window(crashed_at, ended_at)),
    ] {
        eprintln!(
            "faults: {fault}: {:.1} s from the first failed to the first OK call, {} failed, {} unknown",
            window.outage.as_secs_f64(),
            window.failed,
            window.unknown
        );
    }
    assert!(counts.ok > 50 && counts.events > 50, "too little happened: {counts:?}");
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
    let (proxy, replica) = replica_through_a_proxy(&app.database_url, true).await;
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
    // Health reported the silence: a probe runs every second and counts
    // database work that waited past the silence bound (2 s here), or gave
    // up on a silent connection in the last 5 s.
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

/// Health says NOT_SERVING when the replica's own connections are stuck,
/// not only when new ones fail: here only writes are in flight (held on a
/// table lock) when the connections go silent, and health's probe opens a
/// new connection that answers. The writes' work, waiting far longer than
/// any statement takes, holds health NOT_SERVING until it is dropped at its
/// bound (the call deadline plus the silence bound: 14 s); then health is
/// SERVING and writes answer again, with no restart. On a cluster of its
/// own: the stuck transactions stay open on the server (holding back the
/// horizon of every feed on the cluster) until the server gives up on them.
#[tokio::test]
async fn a_replica_whose_writes_are_stuck_on_silent_connections_is_not_serving() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let db = own_cluster().await;
    mentorship::devdb::ensure_database(&db.url("postgres"), "mentorship")
        .await
        .expect("database");
    let url = db.url("mentorship");
    let setup = start_replica(&url, mentorship::app::Rules::default(), Jobs::Stepped).await;
    let w = world_on(&Caller::new(&setup.channel, &coordinator())).await;
    let pool = sqlx::PgPool::connect(&url).await.expect("a pool of the test's");
    let (proxy, replica) = replica_through_a_proxy(&url, true).await;
    let caller = Caller::new(&replica.channel, &coordinator()).with_timeout(StdDuration::from_secs(3));
    let health = HealthClient::new(replica.channel.clone());
    let serving = async || {
        health
            .clone()
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    };
    let mut hour = 0;
    let mut book = || {
        hour += 1;
        let t = monday_at(6) + chrono::Duration::hours(hour);
        booking_request(w.listing, w.mentee, t, t + chrono::Duration::minutes(30))
    };
    for _ in 0..3 {
        caller.create_booking(book()).await.expect("a write before the silence");
    }
    assert!(serving().await, "SERVING before the silence");

    // Two writes wait on a lock when the connections go silent.
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE bookings IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("the lock");
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let (caller, request) = (caller.clone(), book());
            tokio::spawn(async move { caller.create_booking(request).await })
        })
        .collect();
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    proxy.silence_existing();
    let silenced = std::time::Instant::now();
    lock.rollback().await.expect("the lock released");
    for write in stuck {
        let answer = write.await.expect("a stuck write");
        assert!(answer.is_err(), "a write on a silent connection cannot answer OK");
    }
    // Well past the time health's probe takes to give up its own silent
    // connection and open a new one that answers (and 5 s past any other
    // silence the replica met), and well before the stuck work's bound.
    let from = silenced + StdDuration::from_secs(9);
    tokio::time::sleep_until(from.into()).await;
    while silenced.elapsed() < StdDuration::from_secs(12) {
        assert!(
            !serving().await,
            "health is NOT_SERVING {} ms after the silence, while writes are stuck",
            silenced.elapsed().as_millis()
        );
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
    let back = silenced + StdDuration::from_secs(40);
    while !serving().await {
        assert!(std::time::Instant::now() < back, "health SERVING again");
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
    let request = book();
    while let Err(status) = caller.create_booking(request.clone()).await {
        assert!(std::time::Instant::now() < back, "writes answer again: {status:?}");
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
}

/// Only work on the database counts towards health's view of stuck
/// connections, never a wait on a client: a caller that opens a call and
/// never finishes sending its request (here anonymously, on Health/Check)
/// leaves the replica SERVING, though its call is open far past the bound
/// after which database work counts as stuck (2 s here).
#[tokio::test]
async fn a_client_that_never_finishes_its_request_leaves_health_serving() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let app = spawn_app().await;
    let (_proxy, replica) = replica_through_a_proxy(&app.database_url, true).await;
    let addr = replica.server.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    // Headers sent, the body never ended.
    let (_response, _body) = client.send_request(request, false).expect("send");
    let health = HealthClient::new(replica.channel.clone());
    let opened = std::time::Instant::now();
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    while opened.elapsed() < StdDuration::from_secs(6) {
        let status = health.clone().check(HealthCheckRequest::default()).await;
        assert!(
            status.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving),
            "health SERVING {} ms into a call whose request never ends",
            opened.elapsed().as_millis()
        );
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
}

/// Every database connection of a replica has TCP keepalive and a user
/// timeout, so the kernel gives up on a peer that vanished (a cut network,
/// a dead host) instead of waiting minutes: looked up on the sockets of the
/// real binary (copies taken with `pidfd_getfd`), the API's pool and the
/// side pools of health and the background work alike.
#[tokio::test]
async fn every_database_connection_of_a_replica_has_keepalive_and_a_user_timeout() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let app = spawn_app().await;
    let server = spawn_binary(&app.database_url, &[]).await;
    let w = world(&app).await;
    // Work on the API's pool, and time for the background work and health to
    // open theirs.
    scheduled(&app, &w, monday_at(6)).await;
    let caller = server.as_(&coordinator());
    let mut sessions = caller
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("list");
    assert!(!sessions.sessions.is_empty());
    caller.get_session(&sessions.sessions.remove(0).id).await.expect("get");
    tokio::time::sleep(StdDuration::from_millis(1500)).await;

    let database: std::net::SocketAddr = app
        .database_url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(host, _)| host.parse().ok())
        .expect("the database's address");
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: plain system calls; the descriptors they return are owned here.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // Each socket of the binary's to the database: whether it has the
    // options, by descriptor.
    let scan = || {
        use std::os::fd::AsRawFd;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("its descriptors")
            .flatten()
        {
            let is_socket = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
            let Some(target) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if !is_socket {
                continue;
            }
            let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
            if copy < 0 {
                let error = std::io::Error::last_os_error();
                assert_eq!(error.raw_os_error(), Some(libc::EBADF), "pidfd_getfd: {error}");
                continue; // closed meanwhile
            }
            let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
            let socket = socket2::SockRef::from(&copy);
            if socket.peer_addr().ok().and_then(|a| a.as_socket()) != Some(database) {
                continue;
            }
            let options = (
                socket.keepalive().expect("SO_KEEPALIVE"),
                socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
                socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
                socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            );
            found.push((target, options));
        }
        found
    };
    let wanted = (
        true,
        StdDuration::from_secs(10),
        StdDuration::from_secs(5),
        Some(StdDuration::from_secs(20)),
    );
    // A connection caught between its TCP connect and the pool's
    // `after_connect` has none yet: look again a moment later.
    let mut found = scan();
    for _ in 0..3 {
        if found.iter().all(|(_, options)| *options == wanted) {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        found = scan();
    }
    for (descriptor, options) in &found {
        assert_eq!(
            *options, wanted,
            "keepalive, idle, interval, user timeout on descriptor {descriptor}"
        );
    }
    // The API's pool, health's, the feed's and the jobs' connections.
    assert!(found.len() >= 3, "only {} database connections found", found.len());
}

/// A plain read (a statement outside any transaction, which leaves nothing
/// queued on its connection) whose connection goes silent is dropped at its
/// call's work bound, and its connection goes back to the pool mid-answer.
/// sqlx pings every connection it takes back, with no bound of its own: on a
/// connection that acknowledges bytes and never answers, each such read
/// used to keep its place in the pool for good, until the pool had none
/// left. Now a connection handed back after work was dropped is checked
/// within 5 s and closed: the pool (two connections here) serves again on
/// new ones. (The reads wait on a table lock when the connections go
/// silent, so both are surely in the middle of a statement.)
#[tokio::test]
async fn a_read_dropped_on_a_silent_connection_gives_its_place_in_the_pool_back() {
    let (_db, url, pool) = cluster_of_its_own().await;
    let (proxy, replica) = replica_through_a_proxy_with(&url, true, 2, StdDuration::from_secs(3)).await;
    let caller = Caller::new(&replica.channel, &coordinator()).with_timeout(StdDuration::from_secs(4));
    caller
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("the replica reads");
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let caller = caller.clone();
            tokio::spawn(async move { caller.list_sessions(pb::ListSessionsRequest::default()).await })
        })
        .collect();
    waiting_on_a_lock(&pool, "FROM sessions", 2).await;
    proxy.silence_existing();
    let silenced = std::time::Instant::now();
    lock.rollback().await.expect("unlock");
    for r in readers {
        assert!(r.await.expect("reader").is_err(), "a read on a silent connection fails");
    }
    // The reads' work is dropped at 5 s (the 3 s deadline and the 2 s
    // silence bound), their connections checked within 5 s more.
    loop {
        match caller.list_sessions(pb::ListSessionsRequest::default()).await {
            Ok(_) => break,
            Err(status) => assert!(
                silenced.elapsed() < StdDuration::from_secs(25),
                "ListSessions still fails {} s after the silence: {status:?}",
                silenced.elapsed().as_secs()
            ),
        }
        tokio::time::sleep(StdDuration::from_millis(500)).await;
    }
}

/// A WatchSession stream catching up from the database whose connection
/// goes silent mid-read waits at most the silence bound for that read: the
/// read is dropped, its connection checked and closed, and the stream goes
/// on from a new connection, every event once. (It used to wait for good,
/// its client hearing nothing.) The read waits on a table lock when the
/// connection goes silent, so it is surely in the middle of it.
#[tokio::test]
async fn a_stream_catching_up_on_a_silent_connection_goes_on_from_a_new_one() {
    let (_db, url, pool) = cluster_of_its_own().await;
    let (proxy, replica) = replica_through_a_proxy(&url, true).await;
    let caller = Caller::new(&replica.channel, &coordinator());
    let w = world_on(&caller).await;
    let session = caller
        .create_session(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            ..Default::default()
        })
        .await
        .expect("a session");
    let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM sessions WHERE id = $1")
        .bind(session.id.parse::<Uuid>().expect("uuid"))
        .fetch_one(&pool)
        .await
        .expect("last_seq");
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE session_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let mut stream = caller.watch_session(&session.id, Some(0)).await.expect("WatchSession");
    let first = tokio::spawn(async move {
        let item = stream.message().await;
        (item, stream)
    });
    waiting_on_a_lock(&pool, "FROM session_events", 1).await;
    proxy.silence_existing();
    lock.rollback().await.expect("unlock");
    let (item, mut stream) = tokio::time::timeout(StdDuration::from_secs(15), first)
        .await
        .expect("the stream stalled on its silent connection")
        .expect("reader");
    let mut seqs = Vec::new();
    let mut item = item.expect("an item").expect("not the end");
    loop {
        if let Some(pb::watch_session_response::Item::Event(e)) = item.item {
            seqs.push(e.seq);
        }
        if seqs.len() as i64 >= last_seq {
            break;
        }
        item = tokio::time::timeout(StdDuration::from_secs(15), stream.message())
            .await
            .expect("the stream goes on")
            .expect("an item")
            .expect("not the end");
    }
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "every event once, in order");
}

/// A cluster of the test's own, for a test that locks whole tables (which
/// would hold up every other test on a shared one): it, the database's URL,
/// and a pool of the test's.
async fn cluster_of_its_own() -> (mentorship::devdb::DevDb, String, sqlx::PgPool) {
    let db = own_cluster().await;
    mentorship::devdb::ensure_database(&db.url("postgres"), "mentorship")
        .await
        .expect("database");
    let url = db.url("mentorship");
    let pool = mentorship::connect(&url, 4).await.expect("a pool of the test's");
    (db, url, pool)
}

/// Until `n` backends of the database wait on a lock in a statement
/// containing `statement` (the replica's reads behind a test's lock).
async fn waiting_on_a_lock(pool: &sqlx::PgPool, statement: &str, n: i64) {
    let until = std::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        )
        .bind(statement)
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{waiting} of {n} reads wait on the lock"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// Read-only is not the primary: when the replica's database comes back as
/// a standby (in recovery), health says NOT_SERVING and calls end
/// UNAVAILABLE (new connections to it are refused as they open, and
/// health's probe asks `pg_is_in_recovery()`); once it is promoted, health
/// says SERVING and calls answer again, with no restart of the replica.
#[tokio::test]
async fn a_database_in_recovery_is_not_served_from_until_it_is_promoted() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let (mut db, url, pool) = cluster_of_its_own().await;
    pool.close().await;
    let replica = start_replica(&url, mentorship::app::Rules::default(), Jobs::Stepped).await;
    let caller = Caller::new(&replica.channel, &coordinator()).with_timeout(StdDuration::from_secs(8));
    let health = HealthClient::new(replica.channel.clone());
    let status = async || {
        health
            .clone()
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status())
            .unwrap_or(ServingStatus::Unknown)
    };
    let until = async |want: ServingStatus| {
        let limit = std::time::Instant::now() + StdDuration::from_secs(20);
        while status().await != want {
            assert!(std::time::Instant::now() < limit, "health {want:?} within 20 s");
            tokio::time::sleep(StdDuration::from_millis(200)).await;
        }
    };
    until(ServingStatus::Serving).await;
    caller
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("the replica reads");

    // The server comes back as a standby: read-only, in recovery.
    let mut db = tokio::task::spawn_blocking(move || {
        db.stop();
        std::fs::write(db.cluster_dir().join("pgdata").join("standby.signal"), "").expect("standby.signal");
        db.restart().expect("start as a standby");
        db
    })
    .await
    .expect("join");
    let mut direct = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("a direct connection");
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut direct)
        .await
        .expect("in recovery?");
    assert!(in_recovery, "the server is a standby now");
    until(ServingStatus::NotServing).await;
    let refused = caller.list_sessions(pb::ListSessionsRequest::default()).await;
    let code = refused.expect_err("no call is served from a standby").code();
    assert_eq!(code, Code::Unavailable, "retryable, never INTERNAL");

    // Promoted: the primary again.
    let promoted: bool = sqlx::query_scalar("SELECT pg_promote()")
        .fetch_one(&mut direct)
        .await
        .expect("promote");
    assert!(promoted);
    until(ServingStatus::Serving).await;
    caller
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("the replica reads again");
    drop(direct);
    db.stop();
}

/// A replica of `app`'s database whose connections go through a
/// [`SilentProxy`], jobs stepped; `quick` shortens the statement timeout to
/// 1 s, the wait for a silent read to 2 s, and the call deadline to 12 s.
async fn replica_through_a_proxy(database_url: &str, quick: bool) -> (crate::silent_proxy::SilentProxy, Replica) {
    replica_through_a_proxy_with(database_url, quick, 10, StdDuration::from_secs(12)).await
}

/// [`replica_through_a_proxy`] with a pool of `connections` and, when
/// `quick`, the call deadline `deadline`.
async fn replica_through_a_proxy_with(
    database_url: &str,
    quick: bool,
    connections: u32,
    deadline: StdDuration,
) -> (crate::silent_proxy::SilentProxy, Replica) {
    let upstream = database_url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(host, _)| host.parse().ok())
        .expect("the database's address");
    let proxy = crate::silent_proxy::SilentProxy::start(upstream).await;
    let mut timeouts = mentorship::DbTimeouts::default();
    let mut rules = mentorship::app::Rules::default();
    if quick {
        timeouts.statement = StdDuration::from_secs(1);
        // A transaction whose answers were swallowed stays open on the
        // server for longer than the silence lasts.
        timeouts.idle_in_transaction = StdDuration::from_secs(60);
        rules.silent_connection = StdDuration::from_secs(2);
    }
    let pool = mentorship::connect_with(&proxy.url(database_url), connections, timeouts)
        .await
        .expect("a pool through the proxy");
    let background = mentorship::Background {
        sweeper: false,
        announce: true,
    };
    let mut transport = transport();
    if quick {
        transport.call_deadline = deadline;
    }
    let replica = start_replica_on(pool, rules, background, transport).await;
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
    let (proxy, replica) = replica_through_a_proxy(&app.database_url, false).await;
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

/// The history checker finds what it is there to find: a clean history
/// checks, and each kind of tampering (an OK change missing, a failed call
/// that changed something, a change made twice, an event a watcher missed,
/// got twice or got other than stored, a limit exceeded) fails it, naming
/// the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_history_checker_fails_every_kind_of_broken_history() {
    let app = spawn_with(1, mentorship::app::Rules::default()).await;
    let sub = Uuid::new_v4();
    let token = token(&["coordinator"], sub, None);
    let c = app.as_(&token);
    let (listings, mentees) = checker::world(&c, 1, 4, 1).await;
    let (listing_id, mentee) = (listings[0], mentees[0]);
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let from = checker::start_position(&c).await;
    let watcher = tokio::spawn(checker::follow(c.clone(), from, got.clone(), stop.clone()));
    let rec = checker::Recorder::default();
    let session_watcher = tokio::spawn(checker::follow_sessions(c.clone(), rec.clone(), stop.clone()));
    let work_stop = Arc::new(AtomicBool::new(false));
    let worker = tokio::spawn(checker::work(
        rec.clone(),
        0,
        vec![c.clone()],
        mentee,
        vec![listing_id],
        work_stop.clone(),
    ));
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    work_stop.store(true, Ordering::Relaxed);
    worker.await.expect("worker");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM session_events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    for _ in 0..100 {
        if got.lock().expect("got").len() as i64 >= stored {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    let followed = session_watcher.await.expect("WatchSession follower");
    let received = (got.lock().expect("got").clone(), followed);
    let limits = checker::Limits {
        per_mentor: 4,
        per_mentee: 1,
        system: 100,
        pause_timeout: StdDuration::from_secs(24 * 3600),
    };
    type Seen = (checker::Received, Vec<checker::Followed>);
    let check = |ops: Vec<checker::Op>, (received, followed): Seen, limits: checker::Limits| {
        let pool = app.pool.clone();
        let mentees = vec![mentee];
        async move {
            checker::check(
                &ops,
                checker::Observed {
                    pool: &pool,
                    caller: sub,
                    mentees: &mentees,
                    watchers: vec![("the watcher".into(), received)],
                    session_watchers: vec![("the WatchSession follower".into(), followed)],
                    webhook: None,
                    limits,
                },
            )
            .await
        }
    };
    let ops = rec.ops();
    let counts = check(ops.clone(), received.clone(), limits)
        .await
        .expect("a clean history checks");
    assert!(counts.ok > 5, "{counts:?}");
    assert!(
        received.1.iter().any(|f| f.received.len() >= 2),
        "WatchSession followed a session through: {:?}",
        received.1
    );
    let fails = async |ops: Vec<checker::Op>, received: Seen, limits, what: &str| {
        let report = check(ops, received, limits).await.expect_err(what);
        assert!(report.contains(what), "expected {what:?} in:\n{report}");
        assert!(
            report.contains("its event log"),
            "the report shows the piece of history:\n{report}"
        );
    };

    // A watcher that missed an event, or got one twice.
    let mut missed = received.clone();
    missed.0.remove(missed.0.len() / 2);
    fails(ops.clone(), missed, limits, "never got").await;
    let mut twice = received.clone();
    twice.0.push(twice.0[0].clone());
    fails(ops.clone(), twice, limits, "twice").await;
    // A WatchSession follower that missed its session's first event, or got
    // its events out of order.
    let mut missed = received.clone();
    let first = missed
        .1
        .iter_mut()
        .find(|f| f.received.len() >= 2)
        .expect("a session followed");
    first.received.remove(0);
    fails(ops.clone(), missed, limits, "never got").await;
    let mut swapped = received.clone();
    let first = swapped
        .1
        .iter_mut()
        .find(|f| f.received.len() >= 2)
        .expect("a session followed");
    first.received.swap(0, 1);
    fails(ops.clone(), swapped, limits, "after event").await;
    // A watcher that got an event other than the one stored.
    let mut altered = received.clone();
    let moved = altered
        .0
        .iter_mut()
        .find(|g| !g.to_status.is_empty())
        .expect("an event that moved a session");
    moved.to_status = "NOT_A_STATUS".into();
    fails(ops.clone(), altered, limits, "stored as moving to").await;
    // An OK answer whose change is not stored.
    let mut phantom = ops.clone();
    let mut fake = phantom[0].clone();
    fake.request_id = Uuid::new_v4();
    phantom.push(fake);
    fails(
        phantom,
        received.clone(),
        limits,
        "answered OK but its change is not stored",
    )
    .await;
    // A call that failed definitely, yet its change is stored.
    let mut failed = ops.clone();
    let last = failed.len() - 1;
    failed[last].outcome = checker::Outcome::Failed(Code::FailedPrecondition);
    fails(failed, received.clone(), limits, "failed definitely changed something").await;
    // A limit exceeded somewhere in the history.
    let tight = checker::Limits { system: 0, ..limits };
    fails(ops.clone(), received.clone(), tight, "over the system's 0").await;
    // A change made twice: a second, unanswered transaction by a caller.
    let session: Uuid = ops[0].session.as_deref().expect("created").parse().expect("uuid");
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, type, from_status, to_status, actor_kind)
         SELECT $1, max(seq) + 1, 'STAGE_CHANGED', NULL, NULL, 'COORDINATOR' FROM session_events WHERE session_id = $1",
    )
    .bind(session)
    .execute(&app.pool)
    .await
    .expect("a forged event");
    fails(ops, received, limits, "belong to no call's answer").await;
}

/// A commit whose wait for the synchronous standby is cut short (its
/// backend terminated, as a demotion's fast shutdown does) is visible on the
/// primary without being on any standby, so a failover can still lose it:
/// the feed must not publish it until the standby has it. Here no standby
/// ever confirms (`synchronous_standby_names = 'nobody'`): the watcher gets
/// nothing while the barrier waits, and the event as soon as synchronous
/// replication is off again (as if the standby had caught up). Without the
/// barrier (`store::feed::replicated`) the feed published it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_visible_before_the_standby_has_it_is_not_published_until_it_does() {
    let db = own_crash_safe_cluster().await;
    mentorship::devdb::ensure_database(&db.url("postgres"), "mentorship")
        .await
        .expect("database");
    let url = db.url("mentorship");
    let replica = start_replica(&url, mentorship::app::Rules::default(), Jobs::Stepped).await;
    let token = coordinator();
    let c = Caller::new(&replica.channel, &token);
    let (listings, mentees) = checker::world(&c, 1, 0, 1).await;
    let (listing, mentee) = (listings[0], mentees[0]);
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let from = checker::start_position(&c).await;
    let watcher = tokio::spawn(checker::follow(c.clone(), from, got.clone(), stop.clone()));

    // Synchronous replication to a standby that never answers.
    let admin = sqlx::PgPool::connect(&url).await.expect("admin");
    let set = |statement: &'static str| {
        let admin = admin.clone();
        async move {
            sqlx::query(statement).execute(&admin).await.expect("alter system");
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&admin)
                .await
                .expect("reload");
        }
    };
    set("ALTER SYSTEM SET synchronous_standby_names = 'nobody'").await;
    // The feed reads the setting at most once a second.
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let create = c
        .clone()
        .with_timeout(StdDuration::from_secs(2))
        .create_session(pb::CreateSessionRequest {
            mentee_id: mentee.to_string(),
            listing_id: listing.to_string(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        create.map_err(|s| s.code()).err(),
        Some(Code::DeadlineExceeded),
        "the commit waits for the standby"
    );
    // Cut the wait short as a demotion does: the commit becomes visible here.
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query = 'COMMIT'",
    )
    .fetch_all(&admin)
    .await
    .expect("terminate");
    assert_eq!(terminated, vec![true], "one COMMIT waited for the standby");
    let mut visible = 0;
    for _ in 0..50 {
        visible = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM session_events")
            .fetch_one(&admin)
            .await
            .expect("count");
        if visible > 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(visible > 0, "the terminated commit is visible on the primary");
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    assert_eq!(
        got.lock().expect("got").len(),
        0,
        "a watcher got an event no standby has"
    );

    // The standby "catches up": the barrier's commit returns, and the event goes out.
    set("ALTER SYSTEM RESET synchronous_standby_names").await;
    for _ in 0..100 {
        if got.lock().expect("got").len() as i64 >= visible {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    assert_eq!(
        got.lock().expect("got").len() as i64,
        visible,
        "the event is published once safe"
    );
}
