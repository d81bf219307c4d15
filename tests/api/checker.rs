//! A history checker, Jepsen's way: concurrent clients record each
//! operation's call and its completion (ok, a definite failure, or unknown),
//! and after the run [`check`] holds that history against what was stored
//! (the sessions, their event logs, the remembered request ids) and what
//! the watchers (WatchSessions over gRPC and Server-Sent Events, and
//! WatchSession one session at a time) and a webhook receiver got. The
//! fault suites drive it: the main suite's `faults` (a replica killed,
//! PostgreSQL crash-restarted) and the HA suite (`tests/ha`, failovers of a
//! Patroni cluster).
//!
//! An operation is one call. A call whose outcome is unknown is retried with
//! the same `request_id` until one outcome is definite; all the calls of one
//! `request_id` form a group, the unit the checks reason about. Whether a
//! group took effect is read from the stored request ids: the service
//! remembers the response in the transaction that makes the change, under
//! a key derived from the caller and the `request_id`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mentorship::grpc::pb::{self, SessionStatus};
use prost::Message;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::Caller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Create,
    Pause,
    Resume,
    Complete,
    Cancel,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Ok(Box<pb::Session>),
    /// The call was refused or failed, and changed nothing.
    Failed(Code),
    /// The call may or may not have taken effect.
    Unknown(Code),
}

/// One call, as its client saw it.
#[derive(Debug, Clone)]
pub struct Op {
    pub worker: usize,
    pub kind: Kind,
    /// The session acted on (a transition), or created (once known).
    pub session: Option<String>,
    pub request_id: Uuid,
    pub invoked: Instant,
    pub completed: Instant,
    pub outcome: Outcome,
}

/// Whether a failed call's outcome is unknown: the request may have reached
/// the server and been applied (transport errors, deadlines, UNAVAILABLE).
/// INTERNAL counts as unknown here, and fails the check on its own.
pub fn unknown(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal
    )
}

/// The history of a run, shared by its clients.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    /// Makes one call and records it; the session when it answered OK.
    pub async fn call(
        &self,
        worker: usize,
        kind: Kind,
        session: Option<&str>,
        request_id: Uuid,
        call: impl Future<Output = Result<pb::Session, Status>>,
    ) -> Result<pb::Session, Status> {
        let invoked = Instant::now();
        let answered = call.await;
        let outcome = match &answered {
            Ok(s) => Outcome::Ok(Box::new(s.clone())),
            Err(status) if unknown(status.code()) => Outcome::Unknown(status.code()),
            Err(status) => Outcome::Failed(status.code()),
        };
        let session = match &answered {
            Ok(s) => Some(s.id.clone()),
            Err(_) => session.map(str::to_owned),
        };
        self.ops.lock().expect("history").push(Op {
            worker,
            kind,
            session,
            request_id,
            invoked,
            completed: Instant::now(),
            outcome,
        });
        answered
    }

    /// Calls until the outcome is definite (or `tries` run out), all with
    /// one `request_id`; `call` gets the id and the attempt's number (to
    /// retry on another replica, as a client would).
    pub async fn call_until_known<F, Fut>(
        &self,
        worker: usize,
        kind: Kind,
        session: Option<&str>,
        tries: usize,
        mut call: F,
    ) -> Result<pb::Session, Status>
    where
        F: FnMut(Uuid, usize) -> Fut,
        Fut: Future<Output = Result<pb::Session, Status>>,
    {
        let request_id = Uuid::new_v4();
        let mut last = Err(Status::unavailable("not called"));
        for attempt in 0..tries.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * attempt.min(10) as u64)).await;
            }
            last = self
                .call(worker, kind, session, request_id, call(request_id, attempt))
                .await;
            match &last {
                // A lock timeout changed nothing, but may have waited on the
                // first attempt, still running: try again, as for unknown.
                Err(status) if unknown(status.code()) || status.code() == Code::Aborted => continue,
                _ => break,
            }
        }
        last
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history").clone()
    }

    /// The session the latest OK CreateSession made, unless it is in `not`.
    fn latest_created(&self, not: &HashSet<String>) -> Option<String> {
        let ops = self.ops.lock().expect("history");
        ops.iter()
            .rev()
            .filter(|o| o.kind == Kind::Create && matches!(o.outcome, Outcome::Ok(_)))
            .find_map(|o| o.session.clone().filter(|s| !not.contains(s)))
    }
}

/// Counts of a history, for the closing figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Groups (request ids) with an unknown call that took effect.
    pub unknown_applied: usize,
    pub events: usize,
    pub timers: usize,
}

/// Availability as clients saw it around one fault.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// From the first failed call to the first OK call after it.
    pub outage: Duration,
    pub failed: usize,
    pub unknown: usize,
}

impl Recorder {
    /// The calls completed in `[from, to)`: how long they went without an OK
    /// call (from the first failed one), and how many failed or were unknown.
    pub fn window(&self, from: Instant, to: Instant) -> Window {
        let mut ops: Vec<Op> = self
            .ops()
            .into_iter()
            .filter(|o| o.completed >= from && o.completed < to)
            .collect();
        ops.sort_by_key(|o| o.completed);
        let mut w = Window::default();
        let mut first_bad: Option<Instant> = None;
        for o in &ops {
            match &o.outcome {
                Outcome::Ok(_) => {
                    if let Some(bad) = first_bad.take() {
                        w.outage = w.outage.max(o.completed.saturating_duration_since(bad));
                    }
                }
                Outcome::Failed(code) => {
                    // A refusal by the rules (a precondition, a full
                    // system) is an answer, not an outage; a lock timeout
                    // may be one.
                    if *code == Code::Aborted {
                        first_bad.get_or_insert(o.invoked);
                    }
                    w.failed += 1;
                }
                Outcome::Unknown(_) => {
                    first_bad.get_or_insert(o.invoked);
                    w.unknown += 1;
                }
            }
        }
        if let Some(bad) = first_bad {
            w.outage = w.outage.max(to.saturating_duration_since(bad));
        }
        w
    }
}

/// The limits a run's replicas enforce, checked at every point of the
/// rebuilt history.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_mentor: i64,
    pub per_mentee: i64,
    pub system: i64,
    /// Sessions PAUSED longer than this are ended by the sweeper (a run
    /// waits this long and 6 s more before it checks that every due timer
    /// fired).
    pub pause_timeout: Duration,
}

/// One stored event, as the checks read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub session_id: Uuid,
    pub seq: i64,
    pub r#type: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub actor_kind: String,
    pub reason: String,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub txid: i64,
}

/// One event as a follower received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Got {
    pub session: String,
    pub seq: i64,
    /// The status it moved the session to ("ACTIVE"; empty for none),
    /// held against the stored event's.
    pub to_status: String,
}

impl Got {
    /// `to_status` as any surface spells it: the stored `ACTIVE`, the
    /// proto enum's `SESSION_STATUS_ACTIVE`; unspecified is none.
    pub fn new(session: &str, seq: i64, to_status: Option<&str>) -> Got {
        let status = to_status.unwrap_or_default();
        let status = status.strip_prefix("SESSION_STATUS_").unwrap_or(status);
        Got {
            session: session.to_owned(),
            seq,
            to_status: if status == "UNSPECIFIED" { "" } else { status }.to_owned(),
        }
    }

    fn key(&self) -> (String, i64) {
        (self.session.clone(), self.seq)
    }
}

/// What one follower (a WatchSessions stream, resumed after errors)
/// received, in order.
pub type Received = Vec<Got>;

/// One webhook POST: its `webhook-id` and the event it carried.
pub type Delivered = (String, Got);

/// Everything [`check`] holds the history against.
pub struct Observed<'a> {
    pub pool: &'a sqlx::PgPool,
    /// The `sub` of the clients' token.
    pub caller: Uuid,
    /// The mentees the workers used: every session of theirs must be
    /// accounted for by the history.
    pub mentees: &'a [Uuid],
    pub watchers: Vec<(String, Received)>,
    /// What WatchSession (one session's stream) followers got: each
    /// follower's name, and the sessions it followed.
    pub session_watchers: Vec<(String, Vec<Followed>)>,
    pub webhook: Option<Vec<Delivered>>,
    pub limits: Limits,
}

/// Every response of the workload's calls (CreateSessionResponse,
/// PauseSessionResponse …) holds the session in field 1.
#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(message, optional, tag = "1")]
    session: Option<pb::Session>,
}

/// A group: the calls of one request_id.
struct Group<'a> {
    ops: Vec<&'a Op>,
    /// The remembered response, when the group took effect.
    applied: Option<pb::Session>,
}

impl Group<'_> {
    fn first_invoked(&self) -> Instant {
        self.ops.iter().map(|o| o.invoked).min().expect("a group has a call")
    }
    fn ok_completed(&self) -> Option<Instant> {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .map(|o| o.completed)
            .min()
    }
    fn all_failed(&self) -> bool {
        self.ops.iter().all(|o| matches!(o.outcome, Outcome::Failed(_)))
    }
    fn kind(&self) -> Kind {
        self.ops[0].kind
    }
}

/// Checks the history `ops` against what was stored and observed; the
/// counts, or the violations found, each with the smallest piece of history
/// that shows it (the calls and the event log of the one session).
pub async fn check(ops: &[Op], seen: Observed<'_>) -> Result<Counts, String> {
    let events: Vec<Event> = sqlx::query_as(
        "SELECT id, session_id, seq, type, from_status, to_status, actor_kind, reason, occurred_at, txid \
         FROM session_events ORDER BY id",
    )
    .fetch_all(seen.pool)
    .await
    .map_err(|e| format!("reading the event log: {e}"))?;
    let sessions: Vec<(Uuid, Uuid, Uuid, String)> =
        sqlx::query_as("SELECT id, mentor_id, mentee_id, status FROM sessions")
            .fetch_all(seen.pool)
            .await
            .map_err(|e| format!("reading the sessions: {e}"))?;
    let remembered: HashMap<Uuid, Vec<u8>> =
        sqlx::query_as::<_, (Uuid, Vec<u8>)>("SELECT request_id, response FROM idempotency_keys")
            .fetch_all(seen.pool)
            .await
            .map_err(|e| format!("reading the request ids: {e}"))?
            .into_iter()
            .collect();

    let mut violations: Vec<(String, Option<String>)> = Vec::new();
    let mut counts = Counts {
        calls: ops.len(),
        events: events.len(),
        ..Default::default()
    };
    for o in ops {
        match &o.outcome {
            Outcome::Ok(_) => counts.ok += 1,
            Outcome::Failed(_) => counts.failed += 1,
            Outcome::Unknown(Code::Internal) => {
                counts.unknown += 1;
                violations.push(("a call answered INTERNAL".into(), o.session.clone()));
            }
            Outcome::Unknown(_) => counts.unknown += 1,
        }
    }

    // Groups, and whether each took effect (its request id is stored).
    let mut by_request: BTreeMap<Uuid, Vec<&Op>> = BTreeMap::new();
    for o in ops {
        by_request.entry(o.request_id).or_default().push(o);
    }
    let mut groups = Vec::new();
    for (request_id, group_ops) in by_request {
        let key = Uuid::new_v5(&seen.caller, request_id.as_bytes());
        let applied = match remembered.get(&key) {
            Some(bytes) => Some(
                Answer::decode(bytes.as_slice())
                    .ok()
                    .and_then(|a| a.session)
                    .ok_or_else(|| format!("request {request_id}: the remembered response holds no session"))?,
            ),
            None => None,
        };
        groups.push(Group {
            ops: group_ops,
            applied,
        });
    }
    // The session each applied group acted on.
    let session_of = |g: &Group| g.applied.as_ref().map(|s| s.id.clone());
    for g in &groups {
        let session = session_of(g).or_else(|| g.ops.iter().find_map(|o| o.session.clone()));
        if g.ok_completed().is_some() && g.applied.is_none() {
            violations.push((
                "a call answered OK but its change is not stored".into(),
                session.clone(),
            ));
        } else if g.all_failed() && g.applied.is_some() {
            violations.push((
                "a call that failed definitely changed something".into(),
                session.clone(),
            ));
        } else if g.applied.is_some() && g.ops.iter().any(|o| matches!(o.outcome, Outcome::Unknown(_))) {
            counts.unknown_applied += 1;
        }
        // The last answer a client got is what it acts on: one that says
        // the call failed, while the change was made, misleads it.
        if g.applied.is_some()
            && let Some(last) = g.ops.iter().max_by_key(|o| o.completed)
            && let Outcome::Failed(code) = last.outcome
        {
            violations.push((
                format!("the change was made, but the last answer to its request_id was {code:?}"),
                session.clone(),
            ));
        }
        // Every OK answer of a group is the first outcome.
        if let Some(applied) = &g.applied {
            for o in &g.ops {
                if let Outcome::Ok(s) = &o.outcome
                    && (s.id != applied.id || s.etag != applied.etag)
                {
                    violations.push((
                        "a retry with the same request_id answered something else than the first outcome".into(),
                        Some(applied.id.clone()),
                    ));
                }
            }
        }
    }

    // Per session: each applied group is exactly one of its transactions,
    // and its answer is in the log.
    let mut log: HashMap<Uuid, Vec<&Event>> = HashMap::new();
    for e in &events {
        log.entry(e.session_id).or_default().push(e);
    }
    let ours: HashSet<Uuid> = seen.mentees.iter().copied().collect();
    let mut applied_on: HashMap<String, Vec<&Group>> = HashMap::new();
    for g in &groups {
        if let Some(s) = session_of(g) {
            applied_on.entry(s).or_default().push(g);
        }
    }
    for (id, _mentor, mentee, _status) in &sessions {
        if !ours.contains(mentee) {
            continue;
        }
        let key = id.to_string();
        let applied = applied_on.get(&key).map_or(&[][..], Vec::as_slice);
        if !applied.iter().any(|g| g.kind() == Kind::Create) {
            violations.push(("a session exists that no call created".into(), Some(key.clone())));
        }
        let session_log = log.get(id).map_or(&[][..], Vec::as_slice);
        // Each answer names the version it left (a call that found the
        // session already as asked answers OK and changes nothing, naming
        // the version it found). Every callers' transaction in the log must
        // be the one some answer names: one made twice would not be.
        let mut answered_transactions = HashSet::new();
        for g in applied {
            let s = g.applied.as_ref().expect("applied");
            let version: i64 = s.etag.parse().unwrap_or(-1);
            let at = session_log.iter().find(|e| e.seq == version);
            let status = SessionStatus::try_from(s.status)
                .map(|st| st.as_str_name().trim_start_matches("SESSION_STATUS_").to_owned())
                .unwrap_or_default();
            match at {
                Some(e) if e.to_status.as_deref().is_none_or(|to| to == status) => {
                    answered_transactions.insert(e.txid);
                }
                _ => violations.push((
                    format!("the answer (version {version}, {status}) is not in the event log"),
                    Some(key.clone()),
                )),
            }
        }
        let unexplained = session_log
            .iter()
            .filter(|e| e.actor_kind != "SYSTEM" && !answered_transactions.contains(&e.txid))
            .count();
        if unexplained > 0 {
            violations.push((
                format!("{unexplained} events by callers belong to no call's answer (a change made twice?)"),
                Some(key.clone()),
            ));
        }
        // Real time: a call that ended before another began comes first.
        for a in applied {
            for b in applied {
                let (Some(a_done), Some(sa), Some(sb)) = (a.ok_completed(), &a.applied, &b.applied) else {
                    continue;
                };
                if a_done < b.first_invoked() && sa.etag.parse::<i64>().ok() > sb.etag.parse::<i64>().ok() {
                    violations.push((
                        format!(
                            "a call that ended before another began is later in the log (versions {} and {})",
                            sa.etag, sb.etag
                        ),
                        Some(key.clone()),
                    ));
                }
            }
        }
    }

    // Limits at every point of the history rebuilt from the events, in the
    // order their rows were written (a start counts the holders after every
    // end it saw committed, and writes its event after that).
    let who: HashMap<Uuid, (Uuid, Uuid)> = sessions.iter().map(|(id, m, e, _)| (*id, (*m, *e))).collect();
    let holds = |s: Option<&str>| matches!(s, Some("ACTIVE" | "PAUSED"));
    let mut holding: HashSet<Uuid> = HashSet::new();
    let mut per_mentor: HashMap<Uuid, i64> = HashMap::new();
    let mut per_mentee: HashMap<Uuid, i64> = HashMap::new();
    for e in &events {
        let Some(&(mentor, mentee)) = who.get(&e.session_id) else {
            continue;
        };
        let Some(to) = e.to_status.as_deref() else { continue };
        let was = holding.contains(&e.session_id);
        let now = holds(Some(to));
        // A reassignment moves a held slot: the mentor is the stored one,
        // so counts per mentor are checked for the final mentor only.
        if now && !was {
            holding.insert(e.session_id);
            *per_mentor.entry(mentor).or_default() += 1;
            *per_mentee.entry(mentee).or_default() += 1;
        } else if was && !now {
            holding.remove(&e.session_id);
            *per_mentor.entry(mentor).or_default() -= 1;
            *per_mentee.entry(mentee).or_default() -= 1;
        }
        let (of_mentor, of_mentee) = (
            per_mentor.get(&mentor).copied().unwrap_or(0),
            per_mentee.get(&mentee).copied().unwrap_or(0),
        );
        let over = if holding.len() as i64 > seen.limits.system {
            Some(format!(
                "{} sessions held slots, over the system's {}",
                holding.len(),
                seen.limits.system
            ))
        } else if of_mentor > seen.limits.per_mentor {
            Some(format!(
                "a mentor held {of_mentor} slots, over {}",
                seen.limits.per_mentor
            ))
        } else if of_mentee > seen.limits.per_mentee {
            Some(format!(
                "a mentee held {of_mentee} slots, over {}",
                seen.limits.per_mentee
            ))
        } else {
            None
        };
        if let Some(over) = over {
            violations.push((format!("at event {}: {over}", e.id), Some(e.session_id.to_string())));
        }
    }

    // Timers: each pause that outlived the timeout ended once, by the
    // sweeper, and never before it was due.
    let pause = chrono::Duration::from_std(seen.limits.pause_timeout).expect("duration");
    for (id, session_log) in &log {
        let mut paused_at = None;
        let mut fired = 0;
        for e in session_log {
            if e.reason == "PAUSE_TIMEOUT" {
                fired += 1;
                counts.timers += 1;
                match paused_at {
                    Some(at) if e.occurred_at - at >= pause - chrono::Duration::seconds(1) => {}
                    _ => violations.push(("a pause timer fired before it was due".into(), Some(id.to_string()))),
                }
            }
            if let Some(to) = e.to_status.as_deref() {
                paused_at = (to == "PAUSED").then_some(e.occurred_at);
            }
        }
        if fired > 1 {
            violations.push((format!("a pause timer fired {fired} times"), Some(id.to_string())));
        }
    }
    let overdue: Vec<&(Uuid, Uuid, Uuid, String)> = sessions.iter().filter(|s| s.3 == "PAUSED").collect();
    for s in overdue {
        let last = log.get(&s.0).and_then(|l| l.last()).map(|e| e.occurred_at);
        if let Some(last) = last
            && chrono::Utc::now() - last > pause + chrono::Duration::seconds(5)
        {
            violations.push(("a due pause timer never fired".into(), Some(s.0.to_string())));
        }
    }

    // Followers: each committed event once, in order per session, and
    // nothing else.
    let stored: HashMap<(String, i64), Stored> = events
        .iter()
        .map(|e| {
            let got = Got::new(&e.session_id.to_string(), e.seq, e.to_status.as_deref());
            (got.key(), ((e.txid, e.id), got.to_status))
        })
        .collect();
    for (name, received) in &seen.watchers {
        follower_violations(name, received, &stored, Order::Feed, &mut violations);
    }
    for (name, sessions) in &seen.session_watchers {
        for Followed { session, received, .. } in sessions {
            let of_session = stored
                .iter()
                .filter(|((s, _), _)| s == session)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>();
            let name = format!("{name} of session {session}");
            follower_violations(&name, received, &of_session, Order::Seq, &mut violations);
        }
    }
    if let Some(delivered) = &seen.webhook {
        let mut ids: HashMap<&str, &Got> = HashMap::new();
        let mut first: Received = Vec::new();
        let mut by_event: HashMap<(&str, i64), &str> = HashMap::new();
        for (id, got) in delivered {
            match ids.get(id.as_str()) {
                Some(&before) if before != got => {
                    violations.push((format!("webhook-id {id} carried two events"), Some(got.session.clone())))
                }
                Some(_) => continue, // a redelivery, with its id
                None => {}
            }
            ids.insert(id, got);
            if let Some(other) = by_event.insert((&got.session, got.seq), id) {
                violations.push((
                    format!(
                        "event {} was delivered under two webhook-ids ({other} and {id})",
                        got.seq
                    ),
                    Some(got.session.clone()),
                ));
            }
            first.push(got.clone());
        }
        follower_violations("the webhook receiver", &first, &stored, Order::Seq, &mut violations);
    }

    if violations.is_empty() {
        return Ok(counts);
    }
    // The smallest failing piece: the first violation's session, its calls
    // and its log.
    let mut report = format!("{} violations; the first ones:\n", violations.len());
    for (what, session) in violations.iter().take(5) {
        report.push_str(&format!("- {what} (session {})\n", session.as_deref().unwrap_or("?")));
    }
    if let Some((_, Some(session))) = violations.iter().find(|(_, s)| s.is_some()) {
        report.push_str(&format!("\nsession {session}, its calls:\n"));
        let t0 = ops.iter().map(|o| o.invoked).min().expect("calls");
        for o in ops.iter().filter(|o| o.session.as_deref() == Some(session.as_str())) {
            report.push_str(&format!(
                "  worker {} {:?} request {} [{:?} .. {:?}] {:?}\n",
                o.worker,
                o.kind,
                o.request_id,
                o.invoked - t0,
                o.completed - t0,
                match &o.outcome {
                    Outcome::Ok(s) => format!("OK version {} {:?}", s.etag, s.status()),
                    other => format!("{other:?}"),
                }
            ));
        }
        report.push_str("its event log:\n");
        if let Some(id) = session.parse::<Uuid>().ok().and_then(|id| log.get(&id)) {
            for e in id {
                report.push_str(&format!(
                    "  #{} seq {} {} {:?} -> {:?} by {} ({}) txid {}\n",
                    e.id, e.seq, e.r#type, e.from_status, e.to_status, e.actor_kind, e.reason, e.txid
                ));
            }
        }
    }
    Err(report)
}

/// The order a follower must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// WatchSessions: the feed's, by transaction (`(txid, id)`, the cursor's
    /// order). Two transactions on one session that overlapped may show a
    /// later seq first (docs/ARCHITECTURE.md, "Watching").
    Feed,
    /// Webhooks: seq order per session.
    Seq,
}

/// A stored event's position in the feed (`(txid, id)`) and its status.
type Stored = ((i64, i64), String);

/// A follower's violations: an event twice, an event not in the log or not
/// as stored, one out of order, or a stored event never received.
fn follower_violations(
    name: &str,
    received: &Received,
    stored: &HashMap<(String, i64), Stored>,
    order: Order,
    violations: &mut Vec<(String, Option<String>)>,
) {
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    let mut last_seq: HashMap<&str, i64> = HashMap::new();
    let mut last_position: Option<(i64, i64)> = None;
    for got in received {
        let r = got.key();
        if !seen.insert(r.clone()) {
            violations.push((format!("{name} got event {} twice", r.1), Some(r.0.clone())));
        }
        let Some((position, status)) = stored.get(&r) else {
            violations.push((
                format!("{name} got event {}, which the database does not have", r.1),
                Some(r.0.clone()),
            ));
            continue;
        };
        let position = *position;
        if *status != got.to_status {
            violations.push((
                format!(
                    "{name} got event {} moving to {:?}, stored as moving to {status:?}",
                    r.1, got.to_status
                ),
                Some(r.0.clone()),
            ));
        }
        match order {
            Order::Feed => {
                if last_position.is_some_and(|last| position <= last) {
                    violations.push((
                        format!("{name} got event {} out of the feed's order", r.1),
                        Some(r.0.clone()),
                    ));
                }
                last_position = Some(position);
            }
            Order::Seq => {
                if let Some(&before) = last_seq.get(got.session.as_str())
                    && r.1 <= before
                {
                    violations.push((
                        format!("{name} got event {} after event {before}", r.1),
                        Some(r.0.clone()),
                    ));
                }
                last_seq.insert(&got.session, r.1);
            }
        }
    }
    let missing: Vec<&(String, i64)> = stored.keys().filter(|e| !seen.contains(e)).collect();
    if let Some(m) = missing.first() {
        violations.push((
            format!(
                "{name} never got {} stored events, event {} among them",
                missing.len(),
                m.1
            ),
            Some(m.0.clone()),
        ));
    }
}

/// The world a workload runs in, made by `c`: `mentors` mentors with a
/// listing each (each holding at most `slots` sessions; 0: the configured
/// default) and `mentees` mentees. The listings' ids and the mentees'.
pub async fn world(c: &Caller, mentors: usize, slots: i32, mentees: usize) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut listings = Vec::new();
    for _ in 0..mentors {
        listings.push(crate::helpers::mentor_with_listing(c, slots).await.1);
    }
    let mut ids = Vec::new();
    for _ in 0..mentees {
        let id = Uuid::new_v4();
        c.upsert_mentee(pb::Mentee {
            id: id.to_string(),
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .expect("mentee");
        ids.push(id);
    }
    (listings, ids)
}

/// One client's loop, until `stop`: an on-demand session for its mentee,
/// then start-to-end paths chosen by `n` (pause and resume and complete,
/// cancel, or pause and leave it to the pause timer), on the replicas in
/// turn. Every call carries a request_id, and a call whose outcome is
/// unknown is retried with it.
pub async fn work(
    rec: Recorder,
    worker: usize,
    replicas: Vec<Caller>,
    mentee: Uuid,
    listings: Vec<Uuid>,
    stop: Arc<AtomicBool>,
) {
    const TRIES: usize = 8;
    let mut n = worker;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let on = |k: usize| replicas[(n + k) % replicas.len()].clone();
        let listing = listings[n % listings.len()].to_string();
        let mentee_id = mentee.to_string();
        let created = rec
            .call_until_known(worker, Kind::Create, None, TRIES, |rid, attempt| {
                let c = on(attempt).with_request_id(&rid.to_string());
                let req = pb::CreateSessionRequest {
                    mentee_id: mentee_id.clone(),
                    listing_id: listing.clone(),
                    ..Default::default()
                };
                async move { c.create_session(req).await }
            })
            .await;
        let Ok(session) = created else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let id = session.id.clone();
        macro_rules! step {
            ($kind:expr, $k:expr, |$c:ident, $id:ident| $call:expr) => {
                rec.call_until_known(worker, $kind, Some(&id), TRIES, |rid, attempt| {
                    let $c = on($k + attempt).with_request_id(&rid.to_string());
                    let $id = id.clone();
                    async move { $call.await }
                })
                .await
            };
        }
        let path = n % 6;
        let ended = if session.status() != SessionStatus::Active {
            step!(Kind::Cancel, 1, |c, s| c.cancel_session(&s, "not now")).is_ok()
        } else if path == 0 {
            // Left to the pause timer.
            step!(Kind::Pause, 1, |c, s| c.pause_session(&s, "")).is_ok()
        } else if path == 1 {
            step!(Kind::Cancel, 1, |c, s| c.cancel_session(&s, "changed my mind")).is_ok()
        } else {
            let _ = step!(Kind::Pause, 1, |c, s| c.pause_session(&s, ""));
            let _ = step!(Kind::Resume, 0, |c, s| c.resume_session(&s));
            step!(Kind::Complete, 1, |c, s| c.complete_session(&s, None)).is_ok()
        };
        if !ended {
            // Whatever it was left in (a timer may have ended it), end it.
            let _ = step!(Kind::Cancel, 0, |c, s| c.cancel_session(&s, "cleanup"));
        }
    }
}

/// The position WatchSessions starts from now, on `replica`: a cursor that
/// [`follow`] resumes from, so that it gets every event committed after.
pub async fn start_position(replica: &Caller) -> String {
    let mut stream = replica
        .watch_sessions(pb::WatchSessionsRequest {
            send_start_position: true,
            ..Default::default()
        })
        .await
        .expect("WatchSessions");
    let first = stream.message().await.expect("start position").expect("an item");
    assert!(first.event.is_none(), "the first item is the start position");
    first.cursor
}

/// Follows WatchSessions on `replica` from `cursor`, resuming from the
/// cursor of the last event received after any error, until `stop`;
/// records every (session, seq) it receives.
pub async fn follow(replica: Caller, mut cursor: String, got: Arc<Mutex<Received>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let opened = replica
            .watch_sessions(pb::WatchSessionsRequest {
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await;
        let Ok(mut stream) = opened else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return } else { continue }
                }
            };
            match next {
                Ok(Some(item)) => {
                    if let Some(e) = item.event {
                        let status = pb::SessionStatus::try_from(e.to_status).map(|s| s.as_str_name());
                        got.lock()
                            .expect("received")
                            .push(Got::new(&e.session_id, e.seq, status.ok()));
                    }
                    cursor = item.cursor;
                }
                _ => break,
            }
        }
    }
}

/// One session a WatchSession follower followed: what it received, and
/// when each event arrived.
#[derive(Debug, Clone)]
pub struct Followed {
    pub session: String,
    pub received: Received,
    pub arrived: Vec<Instant>,
}

/// Whether some follower received an event between `from` and `to`: the
/// streams were live through that time (a fault, say).
pub fn received_within(followed: &[Followed], from: Instant, to: Instant) -> bool {
    followed.iter().flat_map(|f| &f.arrived).any(|&t| from <= t && t <= to)
}

/// What the followers got around `from`..`to`, for a failure report: per
/// session, how many events, and when the first and last arrived (seconds
/// from `from`).
pub fn followed_around(followed: &[Followed], from: Instant) -> String {
    let at = |t: &Instant| {
        t.checked_duration_since(from)
            .map_or_else(|| -(from.duration_since(*t).as_secs_f64()), |d| d.as_secs_f64())
    };
    followed
        .iter()
        .map(|f| {
            let span = f
                .arrived
                .first()
                .zip(f.arrived.last())
                .map(|(a, b)| format!("{:.1}..{:.1}", at(a), at(b)));
            format!(
                "{} {} events {span:?} last {:?}\n",
                f.session,
                f.received.len(),
                f.received.last()
            )
        })
        .collect()
}

/// Follows WatchSession (one session's stream) on `replica` until `stop`:
/// every 250 ms, while fewer than 32 are followed, the latest session the
/// workload recorded creating, so some session is followed live through
/// every fault (a session a worker left waiting, QUEUED or PAUSED, keeps
/// its follower until it ends: many at once, so a few such cannot take
/// every follower).
pub async fn follow_sessions(replica: Caller, rec: Recorder, stop: Arc<AtomicBool>) -> Vec<Followed> {
    const AT_ONCE: usize = 32;
    let mut picked = HashSet::new();
    let mut live = tokio::task::JoinSet::new();
    let mut followed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        while let Some(done) = live.try_join_next() {
            followed.push(done.expect("a session follower"));
        }
        if live.len() < AT_ONCE
            && let Some(session) = rec.latest_created(&picked)
        {
            picked.insert(session.clone());
            let (replica, stop) = (replica.clone(), stop.clone());
            live.spawn(async move { follow_session(&replica, session, &stop).await });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    followed.extend(live.join_all().await);
    followed
}

/// One session's WatchSession stream, from its first event (`after_seq:
/// 0`), resumed after the last seq received after any error, until its
/// terminal event ends it; once `stop` is set, until a second passes with
/// nothing new (the run is over: a last catch-up, of a few tries).
async fn follow_session(replica: &Caller, session: String, stop: &AtomicBool) -> Followed {
    use pb::watch_session_response::Item;
    let mut f = Followed {
        session,
        received: Vec::new(),
        arrived: Vec::new(),
    };
    let (mut ended, mut drained, mut tries_draining) = (false, false, 0);
    while !ended && !drained && tries_draining < 25 {
        let draining = stop.load(Ordering::Relaxed);
        tries_draining += usize::from(draining);
        let after = f.received.last().map_or(0, |g| g.seq);
        if let Ok(mut stream) = replica.watch_session(&f.session, Some(after)).await {
            loop {
                let idle = Duration::from_millis(if draining { 1000 } else { 200 });
                let next = tokio::select! {
                    next = stream.message() => next,
                    _ = tokio::time::sleep(idle) => {
                        drained = draining;
                        if draining || stop.load(Ordering::Relaxed) { break } else { continue }
                    }
                };
                match next {
                    Ok(Some(pb::WatchSessionResponse {
                        item: Some(Item::Event(e)),
                    })) => {
                        let status = SessionStatus::try_from(e.to_status).unwrap_or_default();
                        ended = matches!(
                            status,
                            SessionStatus::Completed | SessionStatus::Cancelled | SessionStatus::Failed
                        );
                        f.received
                            .push(Got::new(&e.session_id, e.seq, Some(status.as_str_name())));
                        f.arrived.push(Instant::now());
                    }
                    Ok(Some(_)) => {}
                    // The end after the terminal event, or a broken stream.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if !ended && !drained {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    f
}

/// One Server-Sent Events block: its `id:` and its `data:` as JSON.
type SseBlock = (Option<String>, serde_json::Value);

/// Reads one WatchSessions stream over REST (Server-Sent Events) from
/// `base` (`http://host:port`), resuming after `last_event_id` when given;
/// hands each block to `each` until it returns false or the stream ends.
async fn read_sse(
    base: &str,
    token: &str,
    last_event_id: Option<&str>,
    mut each: impl FnMut(SseBlock) -> bool,
) -> Result<(), String> {
    use futures::StreamExt;
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client
        .get(format!("{base}/api/mentorship/sessions:watch"))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut data, mut error) = (None, None, false);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                } else if line == "event: error" {
                    error = true;
                }
            }
            if error {
                return Err(format!("event: error {data:?}"));
            }
            if let Some(data) = data
                && !each((id, data))
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// [`start_position`] over REST: the cursor the SSE feed sends first.
pub async fn sse_start_position(base: &str, token: &str) -> String {
    let mut cursor = None;
    read_sse(base, token, None, |(_, data)| {
        cursor = data["cursor"].as_str().map(str::to_owned);
        false
    })
    .await
    .expect("the SSE feed opens");
    cursor.expect("the SSE feed sends its position first")
}

/// [`follow`] over REST: WatchSessions as Server-Sent Events from `base`,
/// reconnecting with `Last-Event-ID` (the last event's cursor) after any
/// error, until `stop`.
pub async fn follow_sse(
    base: String,
    token: String,
    mut cursor: String,
    got: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let from = cursor.clone();
        let read = read_sse(&base, &token, Some(&from), |(id, data)| {
            let event = &data["event"];
            if let (Some(session), Some(seq)) = (
                event["sessionId"].as_str(),
                event["seq"].as_str().and_then(|s| s.parse::<i64>().ok()),
            ) {
                let status = event["toStatus"].as_str();
                got.lock().expect("received").push(Got::new(session, seq, status));
                if let Some(id) = id {
                    cursor = id;
                }
            }
            !stop.load(Ordering::Relaxed)
        });
        // An idle stream only sends a comment every 15 s: give up waiting
        // on it when asked to stop.
        let stopped = async {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = read => {}
            _ = stopped => return,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
