//! Hardening: database timeouts, deadlines and calls abandoned half-way.

use std::time::Duration as StdDuration;

use chrono::Duration;
use mentorship::grpc::pb;
use prost::Message;
use tonic::{Code, Status};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use uuid::Uuid;

use crate::helpers::*;

/// An ACTIVE session of a world of its own.
async fn active_session(app: &TestApp) -> String {
    let w = world(app).await;
    let s = scheduled(app, &w, monday_at(10)).await;
    app.coordinator().start_session(&s.id).await.expect("start");
    s.id
}

async fn health(app: &TestApp) -> ServingStatus {
    let mut client = HealthClient::new(app.replicas[0].channel.clone());
    let response = client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health check");
    response.into_inner().status()
}

/// Holds `id`'s session row locked, as another client (psql) would, until
/// the returned transaction ends.
async fn lock_row(app: &TestApp, id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1::uuid FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("lock the row");
    tx
}

/// The report: one session row locked in psql made 20 AdvanceStage
/// calls fill the pool; every unrelated call then failed, and health went
/// NOT_SERVING. Now the calls on that row fail fast with ABORTED /
/// LOCK_TIMEOUT (the lock timeout), calls on other sessions succeed
/// meanwhile, and health has a pool of its own.
#[tokio::test]
async fn a_row_held_locked_fails_its_own_calls_fast_and_nothing_else_waits() {
    let app = spawn_app().await;
    let locked = active_session(&app).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(active_session(&app).await);
    }
    let events = app.count("session_events").await;
    let held = lock_row(&app, &locked).await;

    let c = app.coordinator();
    let stuck: Vec<_> = (0..20)
        .map(|i| {
            let (c, id) = (c.clone(), locked.clone());
            tokio::spawn(async move { c.advance_stage(&id, &format!("step-{i}")).await })
        })
        .collect();
    // Meanwhile, calls on other sessions and health.
    let mut fine = Vec::new();
    for (i, id) in others.iter().enumerate() {
        let (c, id) = (c.clone(), id.clone());
        fine.push(tokio::spawn(async move {
            c.advance_stage(&id, &format!("other-{i}")).await?;
            c.get_session(&id).await
        }));
    }
    assert_eq!(health(&app).await, ServingStatus::Serving);
    for f in fine {
        let session = f.await.expect("join").expect("a call on another session succeeds");
        assert!(session.stage.starts_with("other-"));
    }
    for s in stuck {
        let status = assert_status(s.await.expect("join"), Code::Aborted, "LOCK_TIMEOUT");
        assert!(status.message().contains("locked"), "{status:?}");
    }
    assert_eq!(health(&app).await, ServingStatus::Serving);
    held.rollback().await.expect("release");

    // Nothing of the refused calls was stored; the row is usable again.
    assert_eq!(app.count("session_events").await, events + 3);
    let session = c.advance_stage(&locked, "after").await.expect("advance after the lock");
    assert_eq!(session.stage, "after");
}

/// A deadline ends the caller's wait, not the work under way: the call
/// blocked on a locked row is answered DEADLINE_EXCEEDED, goes on when the
/// row is free, and a retry with its request_id answers what happened.
#[tokio::test]
async fn a_deadline_ends_the_wait_not_the_work_and_a_retry_answers_what_happened() {
    let app = spawn_app().await;
    let id = active_session(&app).await;
    let held = lock_row(&app, &id).await;
    let request_id = Uuid::new_v4().to_string();
    let c = app.coordinator().with_request_id(&request_id);
    let waited = c
        .clone()
        .with_timeout(StdDuration::from_millis(150))
        .advance_stage(&id, "review")
        .await;
    // tonic's client answers its own deadline CANCELLED ("Timeout expired").
    let code = waited.expect_err("the deadline passes").code();
    assert!(matches!(code, Code::DeadlineExceeded | Code::Cancelled), "{code:?}");
    // The row frees well within the lock timeout: the work under way goes
    // on by itself, with no call waiting for it.
    held.rollback().await.expect("release");
    for _ in 0..100 {
        if event_log(&app, &id).await.iter().any(|e| e.to_stage == "review") {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert!(
        event_log(&app, &id).await.iter().any(|e| e.to_stage == "review"),
        "the abandoned call committed its change"
    );
    // Counted once the change is seen (a count taken before could miss it).
    let stored = app.count("session_events").await;
    // The retry replays it: the same answer, no new event.
    let retried = c.advance_stage(&id, "review").await.expect("retry");
    assert_eq!(app.count("session_events").await, stored);
    assert_eq!(retried.stage, "review");
    assert_eq!(c.advance_stage(&id, "review").await.expect("again"), retried);
    let stages: Vec<_> = event_log(&app, &id)
        .await
        .into_iter()
        .filter(|e| e.to_stage == "review")
        .collect();
    assert_eq!(stages.len(), 1, "the change happened once");

    // The server honours grpc-timeout itself (tonic's client would give up
    // on its own first, so a bare HTTP/2 client asks here).
    let held = lock_row(&app, &id).await;
    let request = pb::AdvanceStageRequest {
        session_id: id.clone(),
        stage: "design".into(),
        ..Default::default()
    };
    let (status, message) = raw_call(&app, "SessionService/AdvanceStage", &request.encode_to_vec(), "100m").await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert!(message.contains("request_id"), "{message}");
    held.rollback().await.expect("release");
}

/// A unary call over a bare HTTP/2 connection with a `grpc-timeout`
/// header, and no timer of the client's own: the grpc-status and
/// grpc-message the server answers.
async fn raw_call(app: &TestApp, method: &str, message: &[u8], timeout: &str) -> (String, String) {
    let addr = app.replicas[0].server.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}/mentorship.v1.{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", coordinator()))
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    body.send_data(framed.into(), true).expect("message");
    let response = response.await.expect("response");
    let header = |headers: &http::HeaderMap, name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    };
    if response.headers().contains_key("grpc-status") {
        return (
            header(response.headers(), "grpc-status"),
            header(response.headers(), "grpc-message"),
        );
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    (header(&trailers, "grpc-status"), header(&trailers, "grpc-message"))
}

/// The server's own deadline ends a call that sends none.
#[tokio::test]
async fn a_call_without_a_deadline_gets_the_servers() {
    let database_url = fresh_database().await;
    let transport = mentorship::Transport {
        call_deadline: StdDuration::from_millis(200),
        ..transport()
    };
    let replica = start_replica_with(
        &database_url,
        mentorship::app::Rules::default(),
        mentorship::Background {
            sweeper: false,
            announce: true,
        },
        transport,
    )
    .await;
    // Setup goes through a replica with the default deadline.
    let setup = start_replica(&database_url, mentorship::app::Rules::default(), Jobs::Stepped).await;
    let app = TestApp {
        pool: sqlx::PgPool::connect(&database_url).await.expect("pool"),
        database_url,
        replicas: vec![setup, replica],
    };
    let id = active_session(&app).await;
    let held = lock_row(&app, &id).await;
    let status = app
        .on(1, &coordinator())
        .advance_stage(&id, "review")
        .await
        .expect_err("past the server's deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("200 ms"), "{status:?}");
    held.rollback().await.expect("release");
}

/// One request of every mutating RPC, as `Call::send` sends it.
macro_rules! calls {
    ($($name:ident($request:ty)),* $(,)?) => {
        #[derive(Clone, Debug)]
        enum Call { $($name($request)),* }

        impl Call {
            /// The encoded response, or the status.
            async fn send(&self, c: &Caller) -> Result<Vec<u8>, Status> {
                match self {
                    $(Call::$name(r) => c.call(r.clone()).await.map(|r| r.encode_to_vec()),)*
                }
            }
        }
    };
}

calls!(
    UpsertMentee(pb::UpsertMenteeRequest),
    UpsertMentor(pb::UpsertMentorRequest),
    UpsertListing(pb::UpsertListingRequest),
    CreateBooking(pb::CreateBookingRequest),
    AcceptBooking(pb::AcceptBookingRequest),
    DeclineBooking(pb::DeclineBookingRequest),
    CancelBooking(pb::CancelBookingRequest),
    CreateSession(pb::CreateSessionRequest),
    StartSession(pb::StartSessionRequest),
    PauseSession(pb::PauseSessionRequest),
    ResumeSession(pb::ResumeSessionRequest),
    CompleteSession(pb::CompleteSessionRequest),
    FailSession(pb::FailSessionRequest),
    CancelSession(pb::CancelSessionRequest),
    AdvanceStage(pb::AdvanceStageRequest),
    UpdateSessionConfig(pb::UpdateSessionConfigRequest),
    ReassignMentor(pb::ReassignMentorRequest),
);

/// What the storm works on: worlds, their SCHEDULED sessions and DRAFT bookings.
struct Targets {
    worlds: Vec<World>,
    sessions: Vec<String>,
    drafts: Vec<String>,
}

/// The `n`th call of the storm, every mutating RPC in turn, each with a
/// request id of its own.
fn nth_call(t: &Targets, n: usize) -> Call {
    let w = &t.worlds[n % t.worlds.len()];
    let session = t.sessions[(n / 17) % t.sessions.len()].clone();
    let draft = t.drafts[(n / 17) % t.drafts.len()].clone();
    let request_id = Uuid::new_v4().to_string();
    // A week of its own per call: created bookings never overlap.
    let at = monday_at(6) + Duration::weeks(20 + n as i64);
    match n % 17 {
        0 => Call::UpsertMentee(pb::UpsertMenteeRequest {
            mentee: Some(pb::Mentee {
                id: Uuid::new_v4().to_string(),
                display_name: format!("mentee {n}"),
                ..Default::default()
            }),
            request_id,
        }),
        1 => Call::UpsertMentor(pb::UpsertMentorRequest {
            mentor: Some(pb::Mentor {
                user_id: Uuid::new_v4().to_string(),
                display_name: format!("mentor {n}"),
                skill_areas: vec!["rust".into()],
                accepting_sessions: true,
                timezone: "UTC".into(),
                ..Default::default()
            }),
            request_id,
        }),
        2 => Call::UpsertListing(pb::UpsertListingRequest {
            listing: Some(pb::Listing {
                mentor_id: w.mentor.to_string(),
                title: format!("listing {n}"),
                skill_area: "rust".into(),
                ..Default::default()
            }),
            request_id,
        }),
        3 => Call::CreateBooking(pb::CreateBookingRequest {
            request_id,
            ..booking_request(w.listing, w.mentee, at, at + Duration::hours(1))
        }),
        4 => Call::AcceptBooking(pb::AcceptBookingRequest {
            booking_id: draft,
            request_id,
        }),
        5 => Call::DeclineBooking(pb::DeclineBookingRequest {
            booking_id: draft,
            reason: "busy".into(),
            request_id,
        }),
        6 => Call::CancelBooking(pb::CancelBookingRequest {
            booking_id: draft,
            reason: "plans changed".into(),
            request_id,
        }),
        7 => Call::CreateSession(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            request_id,
            ..Default::default()
        }),
        8 => Call::StartSession(pb::StartSessionRequest {
            session_id: session,
            request_id,
            ..Default::default()
        }),
        9 => Call::PauseSession(pb::PauseSessionRequest {
            session_id: session,
            request_id,
            ..Default::default()
        }),
        10 => Call::ResumeSession(pb::ResumeSessionRequest {
            session_id: session,
            request_id,
            ..Default::default()
        }),
        11 => Call::CompleteSession(pb::CompleteSessionRequest {
            session_id: session,
            request_id,
            ..Default::default()
        }),
        12 => Call::FailSession(pb::FailSessionRequest {
            session_id: session,
            error_message: "boom".into(),
            request_id,
            ..Default::default()
        }),
        13 => Call::CancelSession(pb::CancelSessionRequest {
            session_id: session,
            reason: "no longer needed".into(),
            request_id,
            ..Default::default()
        }),
        14 => Call::AdvanceStage(pb::AdvanceStageRequest {
            session_id: session,
            stage: format!("stage-{}", n % 5),
            request_id,
            ..Default::default()
        }),
        15 => Call::UpdateSessionConfig(pb::UpdateSessionConfigRequest {
            session_id: session,
            config: Some(pb::SessionConfig {
                max_duration: Some(prost_types::Duration {
                    seconds: 3600 * (2 + (n % 3) as i64),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            update_mask: Some(mask(&["max_duration"])),
            request_id,
            ..Default::default()
        }),
        _ => Call::ReassignMentor(pb::ReassignMentorRequest {
            session_id: session,
            mentor_id: t.worlds[(n + 1) % t.worlds.len()].mentor.to_string(),
            reason: "balance".into(),
            request_id,
            ..Default::default()
        }),
    }
}

/// The report: at 128 and more callers whose connection dropped,
/// the server logged "there is already a transaction in progress" (sqlx
/// handing back a connection whose BEGIN was cut off). Thousands of calls
/// of every mutating RPC, each abandoned by its client after 1 ms; then no
/// backend is left idle in a transaction, PostgreSQL logged no such
/// warning, every session's event log agrees with its status, and every
/// request_id retried answers the same twice.
#[tokio::test]
async fn calls_abandoned_at_a_1ms_deadline_leave_no_open_transaction_and_no_half_done_work() {
    let app = spawn_app().await;
    let c = app.coordinator();
    let mut t = Targets {
        worlds: Vec::new(),
        sessions: Vec::new(),
        drafts: Vec::new(),
    };
    for _ in 0..6 {
        let w = world(&app).await;
        for h in 0..4 {
            t.sessions.push(scheduled(&app, &w, monday_at(8 + h)).await.id);
        }
        for h in 0..3 {
            let at = monday_at(14 + h);
            t.drafts.push(draft(&app, &w, at, at + Duration::hours(1)).await.id);
        }
        t.worlds.push(w);
    }
    let calls: Vec<Call> = (0..scale(2_000, 5_000)).map(|n| nth_call(&t, n)).collect();

    // 128 callers, each abandoning every call after 1 ms.
    let impatient = c.clone().with_timeout(StdDuration::from_millis(1));
    let chunks: Vec<Vec<Call>> = calls.chunks(calls.len().div_ceil(128)).map(<[Call]>::to_vec).collect();
    let callers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let c = impatient.clone();
            tokio::spawn(async move {
                for call in chunk {
                    let _ = call.send(&c).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("join");
    }

    // Every call has run to its end on the server, then none is left open.
    let database = app.database_url.rsplit('/').next().expect("database name").to_owned();
    let open = |state: &'static str| {
        let (pool, database) = (app.pool.clone(), database.clone());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE $2 AND pid <> pg_backend_pid()",
            )
            .bind(database)
            .bind(state)
            .fetch_one(&pool)
            .await
            .expect("pg_stat_activity")
        }
    };
    // Calls still running on the server are briefly idle in a transaction
    // between statements; one left there for good stays until PostgreSQL's
    // idle_in_transaction_session_timeout (10 s) ends it. So: every backend
    // leaves its transaction well before that.
    let mut left = i64::MAX;
    for _ in 0..100 {
        left = open("idle in transaction%").await + open("active").await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(
        left, 0,
        "a backend was left inside a transaction (or still busy) 5 s after the storm"
    );
    let log = std::fs::read_to_string(cluster().await.db.cluster_dir().join("postgres.log")).expect("postgres.log");
    assert!(
        !log.contains("there is already a transaction in progress"),
        "PostgreSQL saw a BEGIN inside an open transaction"
    );

    // Every session's status is the last status its event log moved it to.
    let disagree: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions s WHERE s.status IS DISTINCT FROM (SELECT e.to_status FROM session_events e \
         WHERE e.session_id = s.id AND e.to_status IS NOT NULL ORDER BY e.seq DESC LIMIT 1)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("compare");
    assert_eq!(disagree, 0, "a session's status and its event log disagree");
    let statuses: Vec<String> = sqlx::query_scalar("SELECT DISTINCT status FROM sessions")
        .fetch_all(&app.pool)
        .await
        .expect("statuses");
    assert!(statuses.len() > 1, "the storm changed sessions: {statuses:?}");

    // A retry answers the first result: the same twice. Every Ok answer of a
    // creating call stands for exactly one row (made by the abandoned call,
    // or by the retry when the first attempt had failed and stored nothing),
    // and failed calls made none.
    let mut created = (0, 0);
    for call in &calls {
        let first = call.send(&c).await;
        let again = call.send(&c).await;
        match (&first, &again) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{call:?}"),
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{call:?}"),
            _ => panic!("{call:?}: {first:?} then {again:?}"),
        }
        if first.is_ok() {
            match call {
                Call::CreateBooking(_) => created.0 += 1,
                Call::CreateSession(_) => created = (created.0 + 1, created.1 + 1),
                Call::AcceptBooking(_) => created.1 += 1,
                _ => {}
            }
        }
    }
    // Six worlds of 4 scheduled sessions (with their bookings) and 3 drafts.
    let before = (6 * 7, 6 * 4);
    assert_eq!(
        (app.count("bookings").await, app.count("sessions").await),
        (before.0 + created.0, before.1 + created.1),
        "each booking and session was created by exactly one request that answers it"
    );
}

/// The limit a RESOURCE_EXHAUSTED names: (limit, current, maximum).
fn exhausted(result: Result<impl std::fmt::Debug, Status>) -> (String, String, String) {
    use tonic_types::StatusExt;
    let status = assert_status(result, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    let info = status.get_details_error_info().expect("ErrorInfo");
    let get = |k: &str| info.metadata.get(k).cloned().unwrap_or_default();
    (get("limit"), get("current"), get("maximum"))
}

/// Retries `open` until it succeeds (a dropped stream's slot is given back
/// once the server sees the stream end).
async fn opens_again<T, F: std::future::Future<Output = Result<T, Status>>>(mut open: impl FnMut() -> F) -> T {
    for _ in 0..100 {
        if let Ok(opened) = open().await {
            return opened;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    panic!("the slot was never given back");
}

#[tokio::test]
async fn watch_streams_are_capped_per_caller_and_per_replica() {
    let rules = mentorship::app::Rules {
        watch_streams: mentorship::app::StreamLimits {
            per_caller: 3,
            per_replica: 5,
        },
        ..mentorship::app::Rules::default()
    };
    let app = spawn_with(1, rules).await;
    let w = world(&app).await;
    let id = scheduled(&app, &w, monday_at(10)).await.id;
    let (alice, bob, carol) = (
        app.as_(&coordinator()),
        app.as_(&coordinator()),
        app.as_(&coordinator()),
    );
    let feed = pb::WatchSessionsRequest::default;

    let mut alices = Vec::new();
    for _ in 0..2 {
        alices.push(alice.watch_session(&id, None).await.expect("alice watches"));
    }
    let alices_feed = alice.watch_sessions(feed()).await.expect("a feed counts too");
    let limit = exhausted(alice.watch_session(&id, None).await);
    assert_eq!(limit, ("watch_streams_per_caller".into(), "3".into(), "3".into()));
    exhausted(alice.watch_sessions(feed()).await);

    let _bobs = (
        bob.watch_session(&id, None).await.expect("bob has his own"),
        bob.watch_sessions(feed()).await.expect("bob's feed"),
    );
    let limit = exhausted(carol.watch_session(&id, None).await);
    assert_eq!(limit, ("watch_streams_per_replica".into(), "5".into(), "5".into()));

    // A stream that ends gives its place back.
    drop(alices_feed);
    let _carols = opens_again(|| carol.watch_session(&id, None)).await;
    assert_eq!(app.replicas[0].app.watches.held(), 5);
    drop(alices);
    let _again = opens_again(|| alice.watch_session(&id, None)).await;
}

/// Health/Watch needs no token, so its streams are capped per peer address
/// as well as in all: one peer holding its whole share leaves the others
/// theirs, and each refusal names the cap it hit.
#[tokio::test]
async fn health_watch_streams_are_capped_per_peer_and_in_all() {
    let database_url = fresh_database().await;
    let transport = mentorship::Transport {
        health_watch_streams: 4,
        health_watch_streams_per_peer: 2,
        ..transport()
    };
    let replica = start_replica_with(
        &database_url,
        mentorship::app::Rules::default(),
        mentorship::Background {
            sweeper: false,
            announce: true,
        },
        transport,
    )
    .await;
    let addr = replica.server.addr;
    // Three peers: clients connecting from three loopback addresses.
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        async move { HealthClient::new(channel_from(ip, addr).await) }
    };
    let (a, b, c) = (
        from("127.0.0.1").await,
        from("127.0.0.2").await,
        from("127.0.0.3").await,
    );
    let watch = |health: &HealthClient<tonic::transport::Channel>| {
        let mut health = health.clone();
        async move {
            let mut stream = health
                .watch(HealthCheckRequest { service: String::new() })
                .await?
                .into_inner();
            let first = stream.message().await?.expect("the serving status");
            assert_eq!(first.status(), ServingStatus::Serving);
            Ok::<_, Status>(stream)
        }
    };
    let first = watch(&a).await.expect("a's first");
    let _second = watch(&a).await.expect("a's second");
    let refused = watch(&a).await;
    let status = refused.as_ref().map(|_| ()).expect_err("a's third");
    assert!(
        status.message().contains("this peer address already has 2"),
        "{status:?}"
    );
    assert_eq!(
        exhausted(refused),
        ("health_watch_streams_per_peer".into(), "2".into(), "2".into())
    );
    // Another peer still has its share.
    let _b1 = watch(&b).await.expect("b's first");
    let _b2 = watch(&b).await.expect("b's second");
    // The replica's total is reached: a third peer is refused, saying so.
    let refused = watch(&c).await;
    let status = refused.as_ref().map(|_| ()).expect_err("the replica is full");
    assert!(status.message().contains("this replica already serves 4"), "{status:?}");
    assert_eq!(
        exhausted(refused),
        ("health_watch_streams".into(), "4".into(), "4".into())
    );
    // Check is not a stream: never capped.
    let mut check = c.clone();
    check
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("check");
    drop(first);
    let _third = opens_again(|| watch(&c)).await;
}

/// Transactions committed or rolled back in `database` over `window`, as
/// PostgreSQL counts them.
async fn transactions_over(app: &TestApp, window: StdDuration) -> i64 {
    let database = app.database_url.rsplit('/').next().expect("database name").to_owned();
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&database)
        .fetch_one(&app.pool)
        .await
        .expect("pg_stat_database")
    };
    // Counts reach pg_stat_database when a backend goes idle (at most once
    // a second) or when it has been busy for a second.
    let before = count().await;
    tokio::time::sleep(window).await;
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&app.pool)
        .await
        .expect("flush");
    count().await - before
}

/// The report: with a due session the sweeper could not lock, it
/// spun at 1,155 transactions/s (the baseline is 9/s). Now a pass that
/// fires nothing while something is due backs off, and so does a session
/// whose timeout keeps failing.
#[tokio::test]
async fn the_sweeper_backs_off_when_nothing_due_can_be_locked_or_a_session_keeps_failing() {
    let app = spawn_jobs(1, mentorship::app::Rules::default(), Jobs::RealTime).await;
    // Locked by another client: due, but never lockable.
    let locked = active_session(&app).await;
    app.expire_deadline(&locked).await;
    let held = lock_row(&app, &locked).await;
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let busy = transactions_over(&app, StdDuration::from_secs(3)).await;
    assert!(
        busy < 90,
        "{busy} transactions in 3 s with a due session locked elsewhere"
    );
    held.rollback().await.expect("release");

    // Failing: its stored config is corrupt, so its timeout fails every time.
    let failing = active_session(&app).await;
    sqlx::query("UPDATE sessions SET config = '{\"nonsense\": true}', deadline = now() WHERE id = $1::uuid")
        .bind(&failing)
        .execute(&app.pool)
        .await
        .expect("corrupt");
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let busy = transactions_over(&app, StdDuration::from_secs(3)).await;
    assert!(
        busy < 90,
        "{busy} transactions in 3 s with a session that keeps failing"
    );

    // The locked one, now free, has fired meanwhile all the same.
    let session = app.coordinator().get_session(&locked).await.expect("get");
    assert_eq!(session.status(), pb::SessionStatus::Cancelled, "{session:?}");
}

/// Calls whose work runs are bounded per replica, answered or not: clients
/// that give up early cannot pile up work. Past the bound, UNAVAILABLE /
/// OVERLOADED (retryable).
#[tokio::test]
async fn calls_in_flight_are_bounded_per_replica() {
    let database_url = fresh_database().await;
    let setup = start_replica(&database_url, mentorship::app::Rules::default(), Jobs::Stepped).await;
    let bounded = start_replica_with(
        &database_url,
        mentorship::app::Rules::default(),
        mentorship::Background {
            sweeper: false,
            announce: true,
        },
        mentorship::Transport {
            max_calls_in_flight: 2,
            ..transport()
        },
    )
    .await;
    let app = TestApp {
        pool: sqlx::PgPool::connect(&database_url).await.expect("pool"),
        database_url,
        replicas: vec![setup, bounded],
    };
    let id = active_session(&app).await;
    let held = lock_row(&app, &id).await;
    // Two calls wait on the locked row, abandoned by their clients at once.
    let impatient = app.on(1, &coordinator()).with_timeout(StdDuration::from_millis(50));
    for stage in ["a", "b"] {
        let code = impatient.advance_stage(&id, stage).await.expect_err("abandoned").code();
        assert!(matches!(code, Code::DeadlineExceeded | Code::Cancelled), "{code:?}");
    }
    // Their work still runs: a third call is refused until it ends.
    let status = assert_status(
        app.on(1, &coordinator()).get_session(&id).await,
        Code::Unavailable,
        "OVERLOADED",
    );
    assert!(status.message().contains("2 calls in flight"), "{status:?}");
    held.rollback().await.expect("release");
    let caller = app.on(1, &coordinator());
    let _ = opens_again(|| caller.get_session(&id)).await;
}
