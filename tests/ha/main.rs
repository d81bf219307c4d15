//! The HA suite (issue 25): two replicas of the service on the reference
//! deployment (`scripts/ha-cluster`: etcd, three PostgreSQL 15 nodes under
//! Patroni with strict synchronous replication, HAProxy), under load, through
//! a switchover, a `kill -9` of the primary node, a SIGSTOP of it past
//! Patroni's TTL, a partition of it, and a `kill -9` of its postmaster alone,
//! the old node rejoining as a standby before each next fault. The history
//! checker (`checker`) then holds every call against what the new primary
//! stored and what the watchers and a webhook receiver got.
//!
//! Not part of plain `cargo test` (it takes minutes and needs root):
//! `cargo test --test ha -- --nocapture`. `.ci/run` runs it after the main
//! suite; it fails, never skips, when Patroni, etcd or HAProxy is missing.
//! It touches only loopback and the network namespaces the script makes,
//! and takes the cluster down when it ends, passing or not.

#[path = "../api/checker.rs"]
#[allow(dead_code)]
mod checker;
#[path = "../api/helpers/mod.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;
#[path = "../api/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mentorship::{
    app::Rules,
    grpc::pb::{self, SessionStatus},
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    checker::{Kind, Recorder},
    helpers::*,
};

/// The cluster script, relative to the crate.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ha-cluster");

/// The process groups of the script's runs under way: [`Down`] kills them
/// before it takes the cluster down, so a run the suite's bound cut short
/// (a `heal` starting nodes, say) cannot outlive it.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Runs `scripts/ha-cluster args` in a process group of its own, bounded by
/// `limit`; its stdout.
fn cluster(args: &[&str], limit: Duration) -> String {
    use std::os::unix::process::CommandExt;
    let child = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .arg(SCRIPT)
        .args(args)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/ha-cluster");
    let pid = child.id();
    RUNNING.lock().expect("running").push(pid);
    let out = child.wait_with_output();
    RUNNING.lock().expect("running").retain(|&p| p != pid);
    let out = out.expect("run scripts/ha-cluster");
    assert!(
        out.status.success(),
        "scripts/ha-cluster {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn cluster_async(args: &'static [&'static str], limit: Duration) -> String {
    tokio::task::spawn_blocking(move || cluster(args, limit))
        .await
        .expect("join")
}

/// Takes the cluster down when dropped, whatever happened.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        for pid in RUNNING.lock().map(|r| r.clone()).unwrap_or_default() {
            // SAFETY: a plain system call: SIGKILL to the run's process group.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
        // The nodes' logs stay in target/ for a look after a failure.
        let logs = concat!(env!("CARGO_TARGET_TMPDIR"), "/ha-logs");
        let _ = Command::new("timeout")
            .args(["60", SCRIPT, "down"])
            .env("MENTORSHIP_HA_KEEP_LOGS", logs)
            .status();
    }
}

/// Fails (never skips) when a part of the reference deployment is missing.
fn require_tools() {
    for (tool, package) in [("patroni", "patroni"), ("etcd", "etcd-server"), ("haproxy", "haproxy")] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: apt-get install {package} (the HA suite needs it)"
        );
    }
}

const PER_MENTOR: i64 = 2;
const PER_MENTEE: i64 = 2;
const SYSTEM: i64 = 5;
const PAUSE_TIMEOUT: Duration = Duration::from_secs(4);

fn rules() -> Rules {
    let mut rules = receiver::allowing_loopback(Rules::default());
    rules.default_mentor_limit = PER_MENTOR as i32;
    rules.limits.per_mentee = PER_MENTEE;
    rules.limits.system = SYSTEM;
    rules.limits.queue = 1000;
    rules.timeouts.pause_timeout = chrono::Duration::from_std(PAUSE_TIMEOUT).expect("duration");
    rules
}

/// One fault: its name, what the script does, and how long clients waited.
struct Fault {
    name: &'static str,
    window: checker::Window,
    /// From the fault to the end of the settling after its heal.
    span: (Instant, Instant),
    /// Whether no primary is reachable for longer than health's probe
    /// takes to see it (a failover waits out Patroni's TTL).
    outage: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failovers_lose_no_acknowledged_change_and_publish_nothing_a_failover_lost() {
    require_tools();
    let bound = Duration::from_secs(9 * 60);
    tokio::time::timeout(bound, run())
        .await
        .expect("the HA suite ran past its 9 minutes");
}

async fn run() {
    let _down = Down;
    let url = cluster_async(&["up"], Duration::from_secs(180)).await;
    let url = url.lines().last().expect("up prints the DATABASE_URL").to_owned();
    eprintln!("ha: cluster up, {url}");
    let started = Instant::now();

    let a = start_replica(&url, rules(), Jobs::RealTime).await;
    let b = start_replica(&url, rules(), Jobs::RealTime).await;
    let sub = Uuid::new_v4();
    let token = token(&["coordinator"], sub, None);
    let (ca, cb) = (Caller::new(&a.channel, &token), Caller::new(&b.channel, &token));

    let (listings, mentees) = checker::world(&cb, 3, 0, scale(8, 12)).await;
    let hooks = receiver::Receiver::start().await;
    ca.call(pb::CreateWebhookRequest {
        webhook: Some(pb::Webhook {
            url: hooks.url(),
            enabled: Some(true),
            ..Default::default()
        }),
        request_id: String::new(),
    })
    .await
    .expect("webhook");

    // A watcher on each replica, from before the first session.
    let stop_watching = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for (name, c) in [("the watcher on replica a", &ca), ("the watcher on replica b", &cb)] {
        let got = Arc::new(Mutex::new(Vec::new()));
        let from = checker::start_position(c).await;
        let task = tokio::spawn(checker::follow(c.clone(), from, got.clone(), stop_watching.clone()));
        watchers.push((name, got, task));
    }
    // And a REST client's: WatchSessions as Server-Sent Events on replica b.
    {
        let base = format!("http://{}", b.server.addr);
        let got = Arc::new(Mutex::new(Vec::new()));
        let from = checker::sse_start_position(&base, &token).await;
        let task = tokio::spawn(checker::follow_sse(
            base,
            token.clone(),
            from,
            got.clone(),
            stop_watching.clone(),
        ));
        watchers.push(("the SSE watcher on replica b", got, task));
    }
    // Health of replica a, sampled throughout.
    let health = Arc::new(Mutex::new(Vec::<(Instant, bool)>::new()));
    let sampler = {
        let (channel, health, stop) = (a.channel.clone(), health.clone(), stop_watching.clone());
        tokio::spawn(async move {
            use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
            let mut client = HealthClient::new(channel);
            while !stop.load(Ordering::Relaxed) {
                let serving = client
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1);
                health.lock().expect("health").push((Instant::now(), serving));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // The load: every worker on both replicas, every call with a request_id
    // and a 5 s deadline.
    let rec = Recorder::default();
    let stop = Arc::new(AtomicBool::new(false));
    // WatchSession followers on each replica, one session after another:
    // some session is followed live through every fault.
    let session_watchers: Vec<_> = [
        ("the WatchSession follower on replica a", &ca),
        ("the WatchSession follower on replica b", &cb),
    ]
    .into_iter()
    .map(|(name, c)| {
        (
            name,
            tokio::spawn(checker::follow_sessions(c.clone(), rec.clone(), stop_watching.clone())),
        )
    })
    .collect();
    let replicas = vec![
        ca.clone().with_timeout(Duration::from_secs(5)),
        cb.clone().with_timeout(Duration::from_secs(5)),
    ];
    let load: Vec<_> = mentees
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

    let mut faults = Vec::new();
    let settle = Duration::from_secs(scale(3, 6) as u64);
    let schedule: [(&str, &'static [&'static str]); 5] = [
        ("switchover", &["failover"]),
        ("kill -9 of the primary node", &["kill-primary"]),
        ("SIGSTOP of the primary node past the TTL", &["freeze-primary"]),
        ("partition of the primary node", &["partition-primary"]),
        ("kill -9 of the primary's postmaster", &["kill-postmaster"]),
    ];
    for (name, args) in schedule {
        tokio::time::sleep(settle).await;
        let from = Instant::now();
        let node = cluster_async(args, Duration::from_secs(60)).await;
        eprintln!("ha: {name} ({node}) at {:?}", started.elapsed());
        if args == ["freeze-primary"] {
            // Frozen longer than Patroni's TTL (20 s): a standby takes over,
            // and the frozen node finds itself demoted when it wakes.
            tokio::time::sleep(Duration::from_secs(25)).await;
        }
        cluster_async(&["wait-primary", "120"], Duration::from_secs(130)).await;
        cluster_async(&["heal", "180"], Duration::from_secs(200)).await;
        tokio::time::sleep(settle).await;
        faults.push(Fault {
            name,
            window: rec.window(from, Instant::now()),
            span: (from, Instant::now()),
            outage: matches!(args, ["kill-primary" | "freeze-primary" | "partition-primary"]),
        });
        eprintln!("ha: {name} healed at {:?}", started.elapsed());
    }
    let healed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&a.app.pool)
        .await
        .expect("the time the last fault healed");

    // Strict synchronous mode: with no standby up, a write blocks (its
    // caller gives up, outcome unknown) and commits once one is back; a
    // retry with its request_id then answers it, made once.
    stop.store(true, Ordering::Relaxed);
    for w in load {
        w.await.expect("worker");
    }
    let blocked = strict_mode_blocks_writes(&rec, &cb, mentees[0], listings[0]).await;

    // Quiet: every pause timer fires, the followers and the receiver catch up.
    tokio::time::sleep(PAUSE_TIMEOUT + Duration::from_secs(6)).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM session_events")
        .fetch_one(&a.app.pool)
        .await
        .expect("count");
    // Until every follower has as many as were stored, or nothing has
    // arrived for 45 s (the webhook deliveries drain the run's backlog last,
    // a few hundred a second on two busy cores).
    let (mut last, mut moved) = (0, Instant::now());
    while moved.elapsed() < Duration::from_secs(45) {
        let counts: Vec<i64> = watchers
            .iter()
            .map(|(_, got, _)| got.lock().expect("got").len() as i64)
            .chain([session_deliveries(&hooks).len() as i64])
            .collect();
        if counts.iter().all(|&n| n >= stored) {
            break;
        }
        let total: i64 = counts.iter().sum();
        if total != last {
            (last, moved) = (total, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_watching.store(true, Ordering::Relaxed);
    let mut received = Vec::new();
    for (name, got, task) in watchers {
        task.await.expect("watcher");
        received.push((name.to_owned(), got.lock().expect("got").clone()));
    }
    sampler.await.expect("sampler");
    let mut followed = Vec::new();
    for (name, task) in session_watchers {
        let sessions = task.await.expect("WatchSession follower");
        // Some session was followed live through each fault.
        for fault in &faults {
            assert!(
                checker::received_within(&sessions, fault.span.0, fault.span.1),
                "{name} received nothing through the {} ({:.1} s); what it followed, from the fault on:\n{}",
                fault.name,
                (fault.span.1 - fault.span.0).as_secs_f64(),
                checker::followed_around(&sessions, fault.span.0)
            );
        }
        followed.push((name.to_owned(), sessions));
    }

    let ops = rec.ops();
    let counts = checker::check(
        &ops,
        checker::Observed {
            pool: &a.app.pool,
            caller: sub,
            mentees: &mentees,
            watchers: received,
            session_watchers: followed,
            webhook: Some(session_deliveries(&hooks)),
            limits: checker::Limits {
                per_mentor: PER_MENTOR,
                per_mentee: PER_MENTEE,
                system: SYSTEM,
                pause_timeout: PAUSE_TIMEOUT,
            },
        },
    )
    .await
    .unwrap_or_else(|report| panic!("the history does not check:\n{report}"));

    // The background jobs carry on by themselves on the last primary: the
    // census (recounted every 15 s by one replica) has counted since, and a
    // retention purge (run hourly) works on the replica's own pool.
    let census_until = Instant::now() + Duration::from_secs(40);
    loop {
        let counted: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT counted_at FROM census")
            .fetch_one(&a.app.pool)
            .await
            .expect("the census");
        if counted.is_some_and(|at| at > healed) {
            break;
        }
        assert!(
            Instant::now() < census_until,
            "no census counted since the last fault healed at {healed} (last: {counted:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for replica in [&a, &b] {
        mentorship::jobs::retention::purge_once(&replica.app)
            .await
            .expect("a retention purge after the faults");
    }

    // Per fault: health went NOT_SERVING while no primary was reachable,
    // and was SERVING again by the end of the settling after the heal.
    let samples = health.lock().expect("health").clone();
    for f in &faults {
        let during: Vec<bool> = samples
            .iter()
            .filter(|(at, _)| (f.span.0..f.span.1).contains(at))
            .map(|(_, serving)| *serving)
            .collect();
        assert!(
            !f.outage || during.iter().any(|serving| !serving),
            "health never left SERVING during the {}",
            f.name
        );
        assert_eq!(during.last(), Some(&true), "health SERVING again after the {}", f.name);
    }
    assert!(samples.last().is_some_and(|(_, s)| *s), "health is not SERVING again");

    eprintln!("ha: {counts:?}; strict mode held a write for {blocked:?}");
    eprintln!("| fault | first failed to first OK call | failed calls | unknown outcome |");
    eprintln!("| --- | ---: | ---: | ---: |");
    for f in &faults {
        eprintln!(
            "| {} | {:.1} s | {} | {} |",
            f.name,
            f.window.outage.as_secs_f64(),
            f.window.failed,
            f.window.unknown
        );
    }
    assert!(
        counts.ok > 100 && counts.timers > 0,
        "too little happened to show anything: {counts:?}"
    );
    eprintln!("ha: done in {:?}", started.elapsed());
}

/// (webhook-id, event) of every session event the receiver got.
fn session_deliveries(hooks: &receiver::Receiver) -> Vec<checker::Delivered> {
    hooks
        .received()
        .into_iter()
        .filter_map(|r| {
            let data = &r.body["data"];
            let got = checker::Got::new(
                data["session_id"].as_str()?,
                data["seq"].as_i64()?,
                data["to_status"].as_str(),
            );
            Some((r.id, got))
        })
        .collect()
}

/// Freezes both standbys: a CreateSession blocks on its COMMIT (strict
/// synchronous mode), its caller gets DEADLINE_EXCEEDED; once a standby is
/// back the commit completes, and a retry with the request_id answers it,
/// made once. How long the write was held.
async fn strict_mode_blocks_writes(rec: &Recorder, c: &Caller, mentee: Uuid, listing: Uuid) -> Duration {
    cluster_async(&["freeze-standbys"], Duration::from_secs(30)).await;
    let request_id = Uuid::new_v4();
    let held = Instant::now();
    let create = |timeout: u64| {
        let c = c
            .clone()
            .with_timeout(Duration::from_secs(timeout))
            .with_request_id(&request_id.to_string());
        async move {
            c.create_session(pb::CreateSessionRequest {
                mentee_id: mentee.to_string(),
                listing_id: listing.to_string(),
                ..Default::default()
            })
            .await
        }
    };
    let blocked = rec.call(0, Kind::Create, None, request_id, create(3)).await;
    assert_eq!(
        blocked.as_ref().map_err(|s| s.code()).err(),
        Some(Code::DeadlineExceeded),
        "with no standby up, a write must wait: {blocked:?}"
    );
    cluster_async(&["heal", "180"], Duration::from_secs(200)).await;
    let answered = rec
        .call(0, Kind::Create, None, request_id, create(10))
        .await
        .expect("the retry answers once a standby is back");
    let waited = held.elapsed();
    let _ = rec
        .call_until_known(0, Kind::Cancel, Some(&answered.id), 8, |rid, _| {
            let c = c.clone().with_request_id(&rid.to_string());
            let id = answered.id.clone();
            async move { c.cancel_session(&id, "done").await }
        })
        .await;
    assert_ne!(answered.status(), SessionStatus::Unspecified);
    waited
}
