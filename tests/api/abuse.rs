//! What an attacker with a valid token, or none, tried in the second attack
//! on the running service: replays under other roles, request ids in
//! another case, nesting that clients cannot decode, undecodable requests.
//! Each test reproduces one finding and checks the fix.

use chrono::Duration;
use mentorship::grpc::pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// A remembered response goes only to a caller who may make that call now:
/// the same `sub` with other roles, or with another mentor claim, gets what
/// a fresh call would get. And a request id is compared as a UUID, so the
/// same id in upper case is the same request.
#[tokio::test]
async fn a_replay_is_authorized_again_and_request_ids_compare_as_uuids() {
    let app = spawn_app().await;
    let (w, other) = (world(&app).await, world(&app).await);
    let t = monday_at(10);
    let sub = Uuid::new_v4();
    let request_id = Uuid::new_v4().to_string();
    let for_other = booking_request(w.listing, other.mentee, t, t + Duration::hours(1));

    let coordinator = token(&["coordinator"], sub, None);
    let booked = app
        .as_(&coordinator)
        .with_request_id(&request_id)
        .create_booking(for_other.clone())
        .await
        .expect("a coordinator books for any mentee");

    // The same sub as a mentee: a fresh call is refused, and so is the replay.
    let mentee = token(&["mentee"], sub, None);
    let fresh = app
        .as_(&mentee)
        .with_request_id(&Uuid::new_v4().to_string())
        .create_booking(for_other.clone())
        .await;
    assert_status(fresh, Code::PermissionDenied, "PERMISSION_DENIED");
    let replay = app
        .as_(&mentee)
        .with_request_id(&request_id)
        .create_booking(for_other.clone())
        .await;
    assert_status(replay, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(app.count("bookings").await, 1, "neither call booked");

    // The coordinator's retry with the id in upper case is the same request.
    let upper = app
        .as_(&coordinator)
        .with_request_id(&request_id.to_uppercase())
        .create_booking(for_other)
        .await
        .expect("the same id in upper case replays");
    assert_eq!(upper, booked);
    assert_eq!(app.count("bookings").await, 1);

    // A mentor's accept, replayed with the same sub but another mentor claim
    // (of a profile that does not exist: one of another user's would be
    // refused before the replay, MENTOR_IDENTITY_MISMATCH).
    let accept_id = Uuid::new_v4().to_string();
    let accepted = app
        .as_(&w.mentor_token())
        .with_request_id(&accept_id)
        .accept_booking(&booked.id)
        .await
        .expect("the booking's mentor accepts");
    let elsewhere = token(&["mentor"], w.mentor_user, Some(Uuid::new_v4()));
    let replay = app
        .as_(&elsewhere)
        .with_request_id(&accept_id)
        .accept_booking(&booked.id)
        .await;
    assert_status(replay, Code::PermissionDenied, "PERMISSION_DENIED");
    // The mentor's own retry still gets the first response, though the
    // booking is no longer a DRAFT.
    let again = app
        .as_(&w.mentor_token())
        .with_request_id(&accept_id.to_uppercase())
        .accept_booking(&booked.id)
        .await
        .expect("the mentor's retry replays");
    assert_eq!(again, accepted);
    assert_eq!(app.count("sessions").await, 1);
}

/// A Struct of `levels` levels of objects (the worst case: each is three
/// protobuf messages deep), with a number at the bottom.
fn nested_objects(levels: usize) -> prost_types::Struct {
    let mut value = serde_json::json!(1);
    for _ in 1..levels {
        value = serde_json::json!({ "deeper": value });
    }
    mentorship::grpc::convert::json_to_struct(&serde_json::json!({ "top": value })).expect("an object")
}

/// A Struct holding `levels` lists inside each other.
fn nested_lists(levels: usize) -> prost_types::Struct {
    let mut value = serde_json::json!(1);
    for _ in 0..levels {
        value = serde_json::json!([value]);
    }
    mentorship::grpc::convert::json_to_struct(&serde_json::json!({ "list": value })).expect("an object")
}

/// Every Struct a request carries is bounded in nesting, so that what is
/// stored and served decodes in every standard client: the deepest values
/// accepted (config, failure details, report data) are read back by the
/// Python client (grpcio on upb) through GetSession, ListSessionEvents,
/// WatchSession and ListSessions; one level more is INVALID_ARGUMENT and
/// changes nothing; a request nested past what prost decodes is
/// INVALID_ARGUMENT too, never INTERNAL.
#[tokio::test]
async fn every_accepted_struct_decodes_in_the_python_client_and_deeper_ones_are_refused() {
    use mentorship::domain::input::MAX_NESTING;
    let app = spawn_with(1, roomy_rules()).await;
    let c = app.coordinator();
    let (failing, completing) = (world(&app).await, world(&app).await);
    let failed = on_demand(&app, &failing, None).await.expect("session to fail");
    let completed = on_demand(&app, &completing, None).await.expect("session to complete");

    // The deepest config is accepted; one level more, or the reported 48
    // nested lists, are not, and change nothing.
    let config = |custom| pb::SessionConfig {
        custom_settings: Some(custom),
        ..Default::default()
    };
    for too_deep in [nested_objects(MAX_NESTING + 1), nested_lists(48)] {
        let status = assert_status(
            c.update_session_config(&failed.id, config(too_deep), &["custom_settings"])
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), ["config.custom_settings"], "{status:?}");
    }
    assert_eq!(event_log(&app, &failed.id).await.len(), 1, "nothing changed");
    c.update_session_config(&failed.id, config(nested_objects(MAX_NESTING)), &["custom_settings"])
        .await
        .expect("the deepest config");

    // Failure details and report data: the same limit.
    let status = assert_status(
        c.fail_session(&failed.id, "boom", Some(nested_objects(MAX_NESTING + 1)))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["details"]);
    c.fail_session(&failed.id, "boom", Some(nested_objects(MAX_NESTING)))
        .await
        .expect("the deepest details");
    let report = |data| pb::SessionReport {
        summary: "done".into(),
        data: Some(data),
        ..Default::default()
    };
    let status = assert_status(
        c.complete_session(&completed.id, Some(report(nested_objects(MAX_NESTING + 1))))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["report.data"]);
    c.complete_session(&completed.id, Some(report(nested_objects(MAX_NESTING))))
        .await
        .expect("the deepest report");

    // A request nested past prost's recursion limit cannot even be decoded:
    // still the caller's bad input.
    let status = assert_status(
        c.update_session_config(&completed.id, config(nested_objects(60)), &["custom_settings"])
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["request"]);

    // What was accepted reads back in Python.
    let descriptors = std::env::temp_dir().join(format!("mentorship-{}.pb", Uuid::new_v4().simple()));
    std::fs::write(&descriptors, mentorship::grpc::pb::FILE_DESCRIPTOR_SET).expect("write descriptors");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/decode_sessions.py");
    let addr = app.replicas[0].server.addr.to_string();
    let token = coordinator();
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            descriptors.to_str().expect("utf-8"),
            &addr,
            &token,
            &failed.id,
            &completed.id,
        ])
        .output()
        .await
        .expect("run python3 (pip install grpcio protobuf)");
    std::fs::remove_file(&descriptors).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python client failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["backend"], "upb", "the standard client's runtime: {seen}");
    let (f, r) = (&seen["sessions"][&failed.id], &seen["sessions"][&completed.id]);
    assert_eq!(f["status"], "SESSION_STATUS_FAILED");
    assert_eq!(f["custom_settings"], MAX_NESTING, "{seen}");
    // Failure details sit inside the failure; events wrap the changed
    // setting in their list of changes.
    assert_eq!(f["failure_details"], MAX_NESTING, "{seen}");
    assert!(
        f["event_details"].as_u64().expect("a depth") >= MAX_NESTING as u64,
        "{seen}"
    );
    assert_eq!(r["report_data"], MAX_NESTING, "{seen}");
    assert!(f["watched"].as_u64().expect("a count") >= 1 && r["watched"].as_u64().expect("a count") >= 1);
    assert_eq!(seen["listed"], 2);
}

/// Values stored before the limit may nest deeper: the check the upgrade
/// ran finds them (here run again on a value written past the API, as an
/// older release could), and a replica warns about them at start.
#[tokio::test]
async fn values_stored_too_deep_are_found_and_reported_at_start() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let session = on_demand(&app, &w, None).await.expect("session");
    let shallow = on_demand(&app, &world(&app).await, None).await.expect("session");
    let deep = format!(r#"{{"a": {}1{}}}"#, "[".repeat(47), "]".repeat(47));
    sqlx::query("UPDATE sessions SET config = jsonb_set(config, '{custom_settings}', $1::jsonb) WHERE id = $2")
        .bind(&deep)
        .bind(Uuid::parse_str(&session.id).expect("uuid"))
        .execute(&app.pool)
        .await
        .expect("store a value an older release accepted");

    let pool = &app.replicas[0].app.pool;
    assert_eq!(mentorship::store::nesting::find(pool).await.expect("find"), 1);
    assert_eq!(
        mentorship::store::nesting::find(pool).await.expect("again"),
        0,
        "recorded once"
    );
    let (listed, total) = mentorship::store::nesting::recorded(pool, 20).await.expect("recorded");
    assert_eq!(total, 1);
    assert_eq!(listed[0].row_key, session.id, "not {}", shallow.id);
    assert_eq!((listed[0].column_name.as_str(), listed[0].nesting), ("config", 49));

    let server = spawn_binary(&app.database_url, &[]).await;
    let log = server.log_text();
    assert!(
        log.contains("stored values nest deeper") && log.contains(&session.id),
        "{log}"
    );
}

/// Webhook targets may not reach inside the service's host or networks.
/// Every address form the attack used, and a name that resolves to
/// loopback, is refused at create and at update with the reason named,
/// and nothing is stored. A subscription made while such targets were
/// allowed (as with a name that resolved elsewhere then: DNS rebinding)
/// gets nothing delivered by a replica that refuses them, and its attempts
/// say only that they failed; a replica that allows them delivers.
#[tokio::test]
async fn webhook_targets_inside_are_refused_at_create_update_and_delivery() {
    use crate::webhooks::{Receiver, due_now, subscription};
    use mentorship::{
        app::targets::Targets,
        jobs::webhooks::{Clients, deliver_once, dispatch_all},
    };
    let mut app = spawn_with(1, roomy_rules()).await;
    let allowing = crate::webhooks::allowing_loopback(roomy_rules());
    app.replicas
        .push(start_replica(&app.database_url, allowing, Jobs::Stepped).await);
    let (refusing, lenient) = (app.as_(&coordinator()), app.on(1, &coordinator()));
    let w = world(&app).await;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let pg_port = app
        .database_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .expect("port");
    let grpc_port = app.replicas[0].server.addr.port();
    let inside = [
        (format!("http://127.0.0.1:{port}/hook"), "loopback"),
        (format!("http://localhost:{port}/hook"), "loopback"),
        (format!("http://0.0.0.0:{port}/hook"), "unspecified"),
        (format!("http://2130706433:{port}/hook"), "loopback"),
        (format!("http://0x7f.1:{port}/hook"), "loopback"),
        (format!("http://[::1]:{port}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "loopback"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), "metadata"),
        ("http://10.1.2.3/hook".to_owned(), "private"),
        ("http://[fd00::1]/hook".to_owned(), "private"),
        (format!("http://127.0.0.1:{pg_port}/"), "loopback"),
        (format!("http://127.0.0.1:{grpc_port}/"), "loopback"),
        // The metrics port, as the README binds it.
        ("http://127.0.0.1:9090/metrics".to_owned(), "loopback"),
    ];
    for (url, why) in &inside {
        let status = assert_status(
            refusing
                .call(pb::CreateWebhookRequest {
                    webhook: Some(subscription(url, &w)),
                    request_id: String::new(),
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), ["webhook.url"], "{url}");
        assert!(status.message().contains(why), "{url}: {status:?}");
    }
    assert_eq!(app.count("webhooks").await, 0, "nothing stored");

    // A public target is fine; moving it inside is refused and changes nothing.
    let public = refusing
        .call(pb::CreateWebhookRequest {
            webhook: Some(subscription("https://93.184.216.34/hook", &w)),
            request_id: String::new(),
        })
        .await
        .expect("a public address")
        .webhook
        .expect("webhook");
    let status = assert_status(
        refusing
            .call(pb::UpdateWebhookRequest {
                webhook: Some(pb::Webhook {
                    id: public.id.clone(),
                    url: format!("http://localhost:{port}/hook"),
                    ..Default::default()
                }),
                update_mask: Some(mask(&["url"])),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(status.message().contains("loopback"), "{status:?}");
    let stored = refusing
        .call(pb::GetWebhookRequest {
            webhook_id: public.id.clone(),
        })
        .await
        .expect("get");
    assert_eq!(stored.webhook.expect("webhook").url, "https://93.184.216.34/hook");
    refusing
        .call(pb::DeleteWebhookRequest {
            webhook_id: public.id,
            request_id: String::new(),
        })
        .await
        .expect("delete");

    // Made where inside targets are allowed: a name and a literal address.
    for url in [format!("http://localhost:{port}/hook"), receiver.url()] {
        lenient
            .call(pb::CreateWebhookRequest {
                webhook: Some(subscription(&url, &w)),
                request_id: String::new(),
            })
            .await
            .expect("allowed on the lenient replica");
    }
    on_demand(&app, &w, None).await.expect("an event to deliver");
    let strict_app = &app.replicas[0].app;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.count("webhook_deliveries").await < 2 && tokio::time::Instant::now() < deadline {
        dispatch_all(strict_app).await.expect("dispatch");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.count("webhook_deliveries").await, 2);
    let strict = Clients::new(std::time::Duration::from_secs(5), Targets::Public).expect("clients");
    assert_eq!(deliver_once(strict_app, &strict).await.expect("attempts"), 2);
    assert!(receiver.received().is_empty(), "nothing reached the inside address");
    let errors: Vec<(i64, String)> = sqlx::query_as(
        "SELECT (a->>'status_code')::bigint, a->>'error' FROM webhook_deliveries, jsonb_array_elements(attempts) a",
    )
    .fetch_all(&app.pool)
    .await
    .expect("attempts");
    assert_eq!(
        errors,
        vec![(0, "the request failed".to_owned()); 2],
        "only that it failed"
    );

    // The lenient replica delivers them: the receiver was there all along.
    due_now(&app).await;
    let lenient_clients = Clients::new(std::time::Duration::from_secs(5), Targets::Any).expect("clients");
    deliver_once(&app.replicas[1].app, &lenient_clients)
        .await
        .expect("attempts");
    assert_eq!(receiver.received().len(), 2);
}

/// Each caller has budgets of reads, writes and stream opens per replica.
/// One caller flooding both replicas with reads gets RESOURCE_EXHAUSTED
/// with RATE_LIMITED and a RetryInfo once its bucket is empty, and never
/// more than a bucket's worth per replica; meanwhile another caller's
/// calls, on both replicas, all succeed, and the flooder's writes and
/// stream opens draw on budgets of their own.
#[tokio::test]
async fn a_caller_over_its_budget_is_refused_with_retry_info_and_slows_no_one_else() {
    use mentorship::grpc::rate_limit::{Budget, RateLimits};
    use tonic_types::StatusExt;
    let budget = Budget {
        per_second: 1,
        burst: 10,
    };
    let transport = mentorship::Transport {
        rate_limits: RateLimits {
            reads: budget,
            writes: budget,
            streams: budget,
        },
        ..Default::default()
    };
    let background = mentorship::Background {
        sweeper: false,
        announce: true,
    };
    let app = spawn_many_serving(2, roomy_rules(), background, transport).await;
    let w = world(&app).await;
    let session = on_demand(&app, &w, None).await.expect("a session to read");
    let (flooder, other) = (coordinator(), coordinator());

    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..200 {
        let c = app.on(i % 2, &flooder);
        let id = session.id.clone();
        calls.push(tokio::spawn(async move { (i % 2, c.get_session(&id).await) }));
    }
    let mut others = Vec::new();
    for i in 0..16 {
        let c = app.on(i % 2, &other);
        let id = session.id.clone();
        others.push(tokio::spawn(async move { c.get_session(&id).await }));
    }
    let mut answered = [0_u32; 2];
    let mut refused = 0;
    for call in calls {
        let (replica, result) = call.await.expect("join");
        match result {
            Ok(_) => answered[replica] += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let info = status.get_details_error_info().expect("ErrorInfo");
                assert_eq!(info.reason, "RATE_LIMITED");
                assert_eq!(info.metadata["budget"], "reads");
                let retry = status.get_details_retry_info().expect("RetryInfo");
                let after = retry.retry_delay.expect("a delay");
                assert!(after > std::time::Duration::ZERO && after <= std::time::Duration::from_secs(1));
                refused += 1;
            }
        }
    }
    for call in others {
        call.await.expect("join").expect("the other caller is never limited");
    }
    // A bucket's worth per replica, and what refilled while the flood ran.
    let refilled = started.elapsed().as_secs() as u32 + 1;
    for n in answered {
        assert!((10..=10 + refilled).contains(&n), "{answered:?}");
    }
    assert_eq!(refused, 200 - answered[0] - answered[1]);

    // The flooder's other budgets are untouched.
    let flooding = app.as_(&flooder);
    flooding
        .pause_session(&session.id, "")
        .await
        .expect("writes have their own budget");
    let stream = flooding.watch_session(&session.id, None).await;
    assert!(stream.is_ok(), "stream opens have their own budget");
}

/// Request metadata past the server's limit gets RESOURCE_EXHAUSTED /
/// METADATA_TOO_LARGE naming the limit, where the attack saw UNKNOWN (an
/// HTTP 431) or a dropped connection; metadata under it is served; and the
/// channel goes on serving after each refusal.
#[tokio::test]
async fn oversized_metadata_gets_a_status_that_names_the_limit() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_types::StatusExt;
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.replicas[0].channel.clone());
    let padded = |bytes: usize| {
        let mut req = tonic::Request::new(HealthCheckRequest::default());
        req.metadata_mut()
            .insert("x-padding", "a".repeat(bytes).parse().expect("ascii"));
        req
    };
    health.check(padded(10 * 1024)).await.expect("10 KiB is served");
    for kib in [20, 60] {
        let status = health.check(padded(kib * 1024)).await.expect_err("too large");
        assert_eq!(status.code(), Code::ResourceExhausted, "{kib} KiB: {status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "METADATA_TOO_LARGE");
        assert_eq!(info.metadata["maximum"], "16384");
        assert!(status.message().contains("more than the 16384"), "{status:?}");
        health.check(padded(0)).await.expect("the channel still serves");
    }
    // A mentorship call too, before its token is read.
    let mut req = authed(
        &coordinator(),
        pb::GetSessionRequest {
            session_id: Uuid::new_v4().to_string(),
        },
    );
    req.metadata_mut()
        .insert("x-padding", "a".repeat(20 * 1024).parse().expect("ascii"));
    let status = app.replicas[0]
        .sessions
        .clone()
        .get_session(req)
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// Nothing holds a connection open for free. A flood of 1,000 half-open
/// connections (a partial HTTP/2 preface, then silence) and 400 idle ones
/// (the handshake done, no call) stays within a stated memory bound (64
/// KiB a connection) while the replica answers; connections past the cap
/// are closed at accept; the half-open ones are closed at the handshake
/// deadline and the idle ones at the idle timeout; and the memory comes
/// back to near where it started.
#[tokio::test]
async fn connection_floods_are_bounded_closed_and_their_memory_returned() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let database_url = fresh_database().await;
    let config = std::env::temp_dir().join(format!("mentorship-{}.yaml", Uuid::new_v4()));
    std::fs::write(
        &config,
        "server:\n  max_connections: 1500\n  max_connections_per_peer: 1500\n  handshake_timeout_seconds: 5\n  idle_timeout_seconds: 5\n",
    )
    .expect("config");
    let path = config.to_str().expect("utf-8").to_owned();
    let server = spawn_binary(&database_url, &[("MENTORSHIP_CONFIG", &path)]).await;
    let addr: std::net::SocketAddr = server.addr.parse().expect("addr");
    let health = || async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await?;
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map_err(Into::into)
            .map(|_| ())
    };
    let answers = || async { health().await.map_err(|e: Box<dyn std::error::Error>| e.to_string()) };
    answers().await.expect("serving");
    let baseline = server.rss_kib();

    // The flood is made well within the handshake deadline (5 s).
    let started = std::time::Instant::now();
    let half_open_one = || async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("part of the preface");
        s
    };
    let idle_one = || async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (send, connection) = h2::client::handshake(tcp).await.expect("handshake");
        (send, tokio::spawn(connection))
    };
    let mut half_open = futures::future::join_all((0..1000).map(|_| half_open_one())).await;
    let idle = futures::future::join_all((0..400).map(|_| idle_one())).await;
    answers().await.expect("the replica answers during the flood");
    let flooded = server.rss_kib();
    assert!(
        flooded <= baseline + 1400 * 64,
        "{} KiB more for 1,400 connections ({baseline} KiB before)",
        flooded.saturating_sub(baseline)
    );

    // Past the cap (1,500 with the flood's 1,400 and the health checks'),
    // a connection is closed as soon as it is accepted.
    let mut past = Vec::new();
    for _ in 0..300 {
        past.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the flood took {:?}",
        started.elapsed()
    );
    let mut refused = 0;
    for s in &mut past {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_millis(500), s.read_to_end(&mut sink)).await;
        // Closed without a byte at once: never served (a served one stays open).
        if matches!(read, Ok(Ok(0) | Err(_))) {
            refused += 1;
        }
    }
    // At most 100 places were left (a few more if the health checks'
    // own connections have closed).
    assert!(refused >= 190, "only {refused} of 300 past the cap were closed");
    drop(past);

    // The half-open ones go at the handshake deadline, the idle ones at the idle timeout.
    // (Read up to the end: the server may have written something first.)
    for s in &mut half_open {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "a half-open connection stayed open");
    }
    for (_send, connection) in idle {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
        assert!(ended.is_ok(), "an idle connection stayed open");
    }
    drop(half_open);
    answers().await.expect("the replica answers after the flood");

    // The memory comes back to within 8 MiB of where it started (idle
    // worker threads hand their freed pages back; src/main.rs).
    let mut after = server.rss_kib();
    for _ in 0..50 {
        if after <= baseline + 8 * 1024 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = server.rss_kib();
    }
    assert!(
        after <= baseline + 8 * 1024,
        "{after} KiB after the flood, {baseline} KiB before, {flooded} KiB during"
    );
    std::fs::remove_file(&config).ok();
}

/// One peer cannot take every connection a replica has: past its own cap
/// its next connection is closed at accept, while another address still
/// connects and is served.
#[tokio::test]
async fn one_peer_cannot_take_every_connection() {
    use tokio::io::AsyncReadExt;
    let transport = mentorship::Transport {
        connections: mentorship::grpc::connections::ConnectionLimits {
            max: 50,
            per_peer: 3,
            ..Default::default()
        },
        ..transport()
    };
    let background = mentorship::Background {
        sweeper: false,
        announce: true,
    };
    // The suite's own channel to the replica comes from 127.0.0.1: one place.
    let app = spawn_serving(roomy_rules(), background, transport).await;
    let addr = app.replicas[0].server.addr;
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((ip, 0).into()).expect("bind");
        socket.connect(addr).await.expect("connect")
    };
    // A served connection answers the HTTP/2 preface with the server's
    // SETTINGS; a refused one is closed with nothing. (The port speaks
    // HTTP/1.1 too, so the server waits for the client's first bytes.)
    let served = |mut s: tokio::net::TcpStream| async move {
        use tokio::io::AsyncWriteExt;
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut byte = [0_u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut byte)).await;
        (matches!(read, Ok(Ok(1))), s)
    };
    let mut kept = Vec::new();
    for _ in 0..2 {
        let (ok, s) = served(from([127, 0, 0, 1]).await).await;
        assert!(ok, "within the peer's cap");
        kept.push(s);
    }
    let (ok, _) = served(from([127, 0, 0, 1]).await).await;
    assert!(!ok, "past the peer's cap: closed at accept");
    let (ok, _other) = served(from([127, 0, 0, 2]).await).await;
    assert!(ok, "another peer is served");
    assert!(serves(&app).await, "the suite's channel still serves");
}

/// Whether the replica answers a health check on the suite's channel.
async fn serves(app: &TestApp) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    HealthClient::new(app.replicas[0].channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .is_ok()
}
