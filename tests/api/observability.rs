//! Metrics: `/metrics` scraped after a known sequence of calls.

use std::time::Duration;

use mentorship::{app::Rules, domain::capacity::Limits, grpc::pb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

/// GETs `path` from `addr` over HTTP/1.1; returns the content type and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    http_get_accepting(addr, path, "").await
}

/// [`http_get`] with an `Accept` header ("" sends none).
pub async fn http_get_accepting(addr: std::net::SocketAddr, path: &str, accept: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let accept = if accept.is_empty() {
        String::new()
    } else {
        format!("Accept: {accept}\r\n")
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// The scraped metrics.
pub struct Scrape(pub String);

impl Scrape {
    pub async fn of(app: &TestApp) -> Scrape {
        let addr = app.replicas[0].server.metrics_addr.expect("metrics served");
        Scrape(http_get(addr, "/metrics").await.1)
    }

    /// The value of the sample `name` whose labels include every one of
    /// `labels`; `None` when there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labelled, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let matches = labels
                .iter()
                .all(|(k, v)| labelled.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            matches.then(|| value.trim().parse().expect("a number"))
        })
    }

    /// Like [`Scrape::get`], zero when absent (a counter never bumped).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// The labels of a SessionService method's calls that ended with `code`.
fn handled<'a>(method: &'a str, code: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("grpc_service", "mentorship.v1.SessionService"),
        ("grpc_method", method),
        ("grpc_code", code),
    ]
}

fn with_metrics() -> mentorship::Transport {
    mentorship::Transport {
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..transport()
    }
}

/// Jobs stepped by the test, like the rest of the suite.
const STEPPED: mentorship::Background = mentorship::Background {
    sweeper: false,
    announce: true,
};

#[tokio::test]
async fn metrics_count_a_known_sequence_of_calls() {
    // One slot per mentee: the second session on demand queues.
    let rules = Rules {
        limits: Limits {
            per_mentee: 1,
            ..Rules::default().limits
        },
        ..Rules::default()
    };
    let app = spawn_serving(rules, STEPPED, with_metrics()).await;
    let c = app.coordinator();
    let w = world(&app).await;

    let active = on_demand(&app, &w, None).await.expect("create");
    assert_eq!(active.status(), pb::SessionStatus::Active);
    let queued = on_demand(&app, &w, None).await.expect("create");
    assert_eq!(queued.status(), pb::SessionStatus::Queued);
    c.advance_stage(&active.id, "review")
        .await
        .expect("a stage, not a status");
    c.pause_session(&active.id, "lunch").await.expect("pause");
    c.resume_session(&active.id).await.expect("resume");
    for _ in 0..3 {
        c.get_session(&active.id).await.expect("get");
    }
    let missing = c.get_session(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(missing.expect_err("no such session").code(), Code::NotFound);
    let anonymous = app
        .sessions()
        .get_session(pb::GetSessionRequest {
            session_id: active.id.clone(),
        })
        .await;
    assert_eq!(anonymous.expect_err("no token").code(), Code::Unauthenticated);

    let m = Scrape::of(&app).await;
    for (method, code, n) in [
        ("CreateSession", "OK", 2.0),
        ("PauseSession", "OK", 1.0),
        ("ResumeSession", "OK", 1.0),
        ("GetSession", "OK", 3.0),
        ("GetSession", "NOT_FOUND", 1.0),
        ("GetSession", "UNAUTHENTICATED", 1.0),
    ] {
        assert_eq!(
            m.count("grpc_server_handled_total", &handled(method, code)),
            n,
            "{method} {code}"
        );
    }
    let get = [("grpc_method", "GetSession"), ("grpc_type", "unary")];
    assert_eq!(m.count("grpc_server_started_total", &get), 5.0);
    assert_eq!(m.count("grpc_server_handling_seconds_count", &get), 5.0);
    assert!(m.count("grpc_server_handling_seconds_sum", &get) > 0.0);
    let bucket = [("grpc_method", "GetSession"), ("le", "+Inf")];
    assert_eq!(m.count("grpc_server_handling_seconds_bucket", &bucket), 5.0);

    // Transitions this replica committed.
    for (from, to, n) in [
        ("NONE", "ACTIVE", 1.0),
        ("NONE", "QUEUED", 1.0),
        ("ACTIVE", "PAUSED", 1.0),
        ("PAUSED", "ACTIVE", 1.0),
        ("ACTIVE", "COMPLETED", 0.0),
        ("ACTIVE", "ACTIVE", 0.0),
    ] {
        let labels = [("from", from), ("to", to)];
        assert_eq!(
            m.count("mentorship_session_transitions_total", &labels),
            n,
            "{from}→{to}"
        );
    }

    // The census: nothing until it is first counted, then exact.
    assert_eq!(m.get("mentorship_sessions", &[("status", "ACTIVE")]), None);
    assert!(m.get("mentorship_census_age_seconds", &[]).expect("age").is_nan());
    assert!(
        mentorship::jobs::census::step(&app.replicas[0].app, Duration::ZERO)
            .await
            .expect("census")
    );
    let m = Scrape::of(&app).await;
    for (status, n) in [("ACTIVE", 1.0), ("QUEUED", 1.0), ("PAUSED", 0.0), ("COMPLETED", 0.0)] {
        assert_eq!(m.get("mentorship_sessions", &[("status", status)]), Some(n), "{status}");
    }
    assert_eq!(m.get("mentorship_queue_length", &[]), Some(1.0));
    assert!(m.get("mentorship_queue_oldest_age_seconds", &[]).expect("age") >= 0.0);
    let age = m.get("mentorship_census_age_seconds", &[]).expect("age");
    assert!((0.0..60.0).contains(&age), "{age}");
    // A census counted a moment ago is not recounted.
    assert!(
        !mentorship::jobs::census::step(&app.replicas[0].app, Duration::from_secs(60))
            .await
            .expect("census")
    );

    // Live gauges: the pool, and an open watch stream.
    assert_eq!(m.get("mentorship_db_pool_max", &[]), Some(10.0));
    assert!(m.get("mentorship_db_pool_connections", &[]).expect("size") >= 1.0);
    assert_eq!(m.get("mentorship_db_pool_waiting", &[]), Some(0.0));
    assert_eq!(m.get("mentorship_watch_streams", &[]), Some(0.0));
    for lag in [
        "mentorship_feed_lag_seconds",
        "mentorship_notifier_lag_seconds",
        "mentorship_sweeper_lag_seconds",
    ] {
        assert!(m.get(lag, &[]).is_some_and(f64::is_finite), "{lag}");
    }
    let mut stream = c.watch_session(&active.id, None).await.expect("watch");
    stream.next().await.expect("the first event").expect("ok");
    assert_eq!(Scrape::of(&app).await.get("mentorship_watch_streams", &[]), Some(1.0));
    drop(stream);
    // The server learns of the reset soon after; the stream then counts as cancelled.
    let mut m = Scrape::of(&app).await;
    for _ in 0..100 {
        if m.get("mentorship_watch_streams", &[]) == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = Scrape::of(&app).await;
    }
    assert_eq!(m.get("mentorship_watch_streams", &[]), Some(0.0));
    assert_eq!(
        m.count("grpc_server_handled_total", &handled("WatchSession", "CANCELLED")),
        1.0
    );

    // A database error, by kind: a row held locked past the lock timeout.
    // (Database errors are counted per process: with `cargo test`, other
    // tests' lock timeouts may add to it, hence `>`.)
    let lock_timeouts = m.count("mentorship_db_errors_total", &[("kind", "lock_timeout")]);
    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1::uuid FOR UPDATE")
        .bind(&active.id)
        .execute(&mut *holder)
        .await
        .expect("lock");
    // A unary call its client gives up on (the stream is reset) counts as CANCELLED.
    let waiting = {
        let c = c.clone();
        let id = active.id.clone();
        tokio::spawn(async move { c.pause_session(&id, "given up").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    waiting.abort();
    let cancelled = handled("PauseSession", "CANCELLED");
    let mut m = Scrape::of(&app).await;
    for _ in 0..100 {
        if m.count("grpc_server_handled_total", &cancelled) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = Scrape::of(&app).await;
    }
    assert_eq!(m.count("grpc_server_handled_total", &cancelled), 1.0);
    let paused = c.pause_session(&active.id, "blocked").await;
    assert_status(paused, Code::Aborted, "LOCK_TIMEOUT");
    holder.rollback().await.expect("rollback");
    let m = Scrape::of(&app).await;
    assert!(m.count("mentorship_db_errors_total", &[("kind", "lock_timeout")]) > lock_timeouts);
    assert_eq!(
        m.count("grpc_server_handled_total", &handled("PauseSession", "ABORTED")),
        1.0
    );
}

/// Feeds `text` to `program args…` on stdin; returns whether it passed and what it printed.
fn check_with(program: &str, args: &[&str], text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program} (.ci/run installs it): {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && printed.trim().is_empty(), printed)
}

/// The scraper chooses the format: the Prometheus text format 0.0.4 when it
/// asks for `text/plain` (or names nothing), checked clean by `promtool
/// check metrics`; OpenMetrics when it asks as Prometheus does, read by the
/// reference OpenMetrics parser (Python's prometheus_client). Every family
/// has its help text in both, counters included, and the metrics port
/// serves nothing else.
#[tokio::test]
async fn metrics_negotiate_their_format_and_both_pass_the_reference_checkers() {
    let app = spawn_serving(Rules::default(), STEPPED, with_metrics()).await;
    let addr = app.replicas[0].server.metrics_addr.expect("served");
    let w = world(&app).await;
    on_demand(&app, &w, None).await.expect("a transition");
    app.coordinator()
        .get_session(&uuid::Uuid::new_v4().to_string())
        .await
        .expect_err("a NOT_FOUND");

    let (content_type, text) = http_get_accepting(addr, "/metrics", "text/plain; version=0.0.4").await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    // The counters the attack found without help text (database errors
    // too, when this process has seen one: a family with no samples is not
    // written at all).
    let mut families = vec![
        "grpc_server_handled_total",
        "grpc_server_started_total",
        "mentorship_session_transitions_total",
    ];
    if text.contains("\nmentorship_db_errors_total{") {
        families.push("mentorship_db_errors_total");
    }
    for family in families {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}: {text}");
        assert!(text.contains(&format!("# TYPE {family} counter")), "{family}: {text}");
    }
    let (clean, printed) = check_with("promtool", &["check", "metrics"], &text);
    assert!(clean, "promtool check metrics: {printed}\n{text}");
    let (_, unasked) = http_get(addr, "/metrics").await;
    assert!(
        unasked.contains("# TYPE grpc_server_handled_total counter"),
        "no Accept: text 0.0.4"
    );

    let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (content_type, body) = http_get_accepting(addr, "/metrics", prometheus).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert!(body.contains("# TYPE grpc_server_handled counter"), "{body}");
    assert!(body.contains("# TYPE grpc_server_handling_seconds histogram"), "{body}");
    let parse = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        families = list(parse(sys.stdin.read()))\n\
        bare = [f.name for f in families if not f.documentation]\n\
        assert not bare, bare\n\
        assert 'grpc_server_handled' in [f.name for f in families]\n";
    let (clean, printed) = check_with("python3", &["-c", parse], &body);
    assert!(clean, "the OpenMetrics parser: {printed}\n{body}");

    // The metrics port serves nothing else.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[tokio::test]
async fn the_sweepers_lag_shows_a_due_deadline_it_cannot_take_and_clears_once_it_fires() {
    // A real-time test: the sweeper runs on its own.
    let background = mentorship::Background {
        sweeper: true,
        announce: true,
    };
    let app = spawn_serving(roomy_rules(), background, with_metrics()).await;
    let w = world(&app).await;
    let session = scheduled(&app, &w, monday_at(10)).await;
    let lag = |m: &Scrape| m.get("mentorship_sweeper_lag_seconds", &[]).expect("lag");

    // Due in half a second, and locked by someone else (before it is due,
    // so the sweeper cannot take it first): the sweeper skips it.
    sqlx::query("UPDATE sessions SET deadline = now() + interval '500 milliseconds' WHERE id = $1::uuid")
        .bind(&session.id)
        .execute(&app.pool)
        .await
        .expect("due soon");
    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1::uuid FOR UPDATE")
        .bind(&session.id)
        .execute(&mut *holder)
        .await
        .expect("lock");
    let mut m = Scrape::of(&app).await;
    for _ in 0..150 {
        if lag(&m) >= 0.5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        m = Scrape::of(&app).await;
    }
    assert!(lag(&m) >= 0.5, "the sweeper is behind a due deadline: {}", lag(&m));

    // Freed, it fires, and the lag is gone.
    holder.rollback().await.expect("release");
    let fired = wait_for_status(&app, &session.id, pb::SessionStatus::Cancelled, Duration::from_secs(5)).await;
    assert_eq!(
        fired.status(),
        pb::SessionStatus::Cancelled,
        "the no-show timeout fired"
    );
    for _ in 0..100 {
        m = Scrape::of(&app).await;
        if lag(&m) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(lag(&m), 0.0);
}

/// `TEST_LOG` shows a test's replicas' logs: the probe below, run in a
/// test process of its own, prints its replica's log of the call it makes
/// with `TEST_LOG=debug`, and nothing of it without.
#[test]
fn test_log_shows_the_logs_of_a_tests_replicas_and_nothing_without_it() {
    let run = |test_log: Option<&str>| {
        let mut command = std::process::Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args(["--exact", "observability::test_log_probe", "--ignored", "--nocapture"])
            .env_remove("TEST_LOG");
        if let Some(filter) = test_log {
            command.env("TEST_LOG", filter);
        }
        let out = command.output().expect("run the probe");
        assert!(out.status.success(), "the probe failed: {out:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "the probe ran:\n{text}");
        text
    };
    let logged = run(Some("mentorship=debug"));
    assert!(
        logged.contains("rpc finished") && logged.contains("/mentorship.v1.DirectoryService/UpsertMentee"),
        "TEST_LOG shows the replica's log of the call:\n{logged}"
    );
    let quiet = run(None);
    assert!(!quiet.contains("rpc finished"), "no log without TEST_LOG:\n{quiet}");
}

/// Run only by the test above, in a process of its own.
#[tokio::test]
#[ignore = "run by test_log_shows_the_logs_of_a_tests_replicas_and_nothing_without_it"]
async fn test_log_probe() {
    let app = spawn_app().await;
    add_mentee(&app).await;
}
