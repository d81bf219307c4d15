//! The SPEC §4.1 transition table against the running server: every status ×
//! RPC × role, plus a property test against a reference model.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Duration;
use mentorship::grpc::pb::{self, SessionStatus};
use proptest::prelude::*;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    OwnerMentee,
    OwnerMentor,
    OtherMentee,
    OtherMentor,
    Coordinator,
    Service,
}

/// The role a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mentee,
    Mentor,
    Coordinator,
    Service,
}

impl Role {
    fn kind(self) -> Kind {
        match self {
            Role::OwnerMentee | Role::OtherMentee => Kind::Mentee,
            Role::OwnerMentor | Role::OtherMentor => Kind::Mentor,
            Role::Coordinator => Kind::Coordinator,
            Role::Service => Kind::Service,
        }
    }
}

const ROLES: [Role; 6] = [
    Role::OwnerMentee,
    Role::OwnerMentor,
    Role::OtherMentee,
    Role::OtherMentor,
    Role::Coordinator,
    Role::Service,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Pause,
    Resume,
    Complete,
    Fail,
    Cancel,
    Stage,
}

const OPS: [Op; 7] = [
    Op::Start,
    Op::Pause,
    Op::Resume,
    Op::Complete,
    Op::Fail,
    Op::Cancel,
    Op::Stage,
];

use SessionStatus::{Active, Cancelled, Completed, Failed, Paused, Queued, Scheduled};

const STATUSES: [SessionStatus; 7] = [Scheduled, Queued, Active, Paused, Completed, Failed, Cancelled];

/// SPEC §4.1, written out independently of the server's table: the outcome of
/// `op` by `role` on a session in `status`: Ok(new status) or the error code.
fn spec(status: SessionStatus, op: Op, role: Role) -> Result<SessionStatus, Code> {
    use Role::*;
    // A role that may never call the RPC is refused first, whatever the
    // session's status (SPEC §6), so the error tells it nothing about the session.
    let ever: &[Kind] = match op {
        Op::Start => &[Kind::Mentee, Kind::Mentor, Kind::Coordinator],
        Op::Pause | Op::Resume | Op::Complete | Op::Stage => &[Kind::Mentor, Kind::Coordinator, Kind::Service],
        Op::Fail => &[Kind::Coordinator, Kind::Service],
        Op::Cancel => &[Kind::Mentee, Kind::Mentor, Kind::Coordinator],
    };
    if !ever.contains(&role.kind()) {
        return Err(Code::PermissionDenied);
    }
    // Non-participants cannot even see the session.
    if matches!(role, OtherMentee | OtherMentor) {
        return Err(Code::PermissionDenied);
    }
    let (target, allowed): (SessionStatus, &[Role]) = match (op, status) {
        (Op::Start, Scheduled) => (Active, &[OwnerMentee, OwnerMentor, Coordinator]),
        (Op::Pause, Active | Paused) => (Paused, &[OwnerMentor, Coordinator, Service]),
        (Op::Resume, Paused | Active) => (Active, &[OwnerMentor, Coordinator, Service]),
        (Op::Complete, Active) => (Completed, &[OwnerMentor, Coordinator, Service]),
        (Op::Fail, Active) => (Failed, &[Service, Coordinator]),
        (Op::Cancel, Scheduled | Queued) => (Cancelled, &[OwnerMentee, OwnerMentor, Coordinator]),
        (Op::Cancel, Active | Paused) => (Cancelled, &[OwnerMentor, Coordinator]),
        (Op::Stage, Active) => (Active, &[OwnerMentor, Coordinator, Service]),
        _ => return Err(Code::FailedPrecondition),
    };
    if allowed.contains(&role) {
        Ok(target)
    } else {
        Err(Code::PermissionDenied)
    }
}

static SLOT: AtomicI64 = AtomicI64::new(0);

fn slot() -> chrono::DateTime<chrono::Utc> {
    monday_at(0) + Duration::days(30) + Duration::hours(2 * SLOT.fetch_add(1, Ordering::Relaxed))
}

fn role_token(role: Role, w: &World) -> String {
    match role {
        Role::OwnerMentee => w.mentee_token(),
        Role::OwnerMentor => w.mentor_token(),
        Role::OtherMentee => token(&["mentee"], Uuid::new_v4(), None),
        Role::OtherMentor => token(&["mentor"], Uuid::new_v4(), Some(Uuid::new_v4())),
        Role::Coordinator => coordinator(),
        Role::Service => service(),
    }
}

async fn apply(app: &TestApp, tok: &str, id: &str, op: Op) -> Result<pb::Session, Status> {
    let c = app.as_(tok);
    match op {
        Op::Start => c.start_session(id).await,
        Op::Pause => c.pause_session(id, "").await,
        Op::Resume => c.resume_session(id).await,
        Op::Complete => c.complete_session(id, None).await,
        Op::Fail => c.fail_session(id, "boom", None).await,
        Op::Cancel => c.cancel_session(id, "no longer needed").await,
        Op::Stage => c.advance_stage(id, "review").await,
    }
}

/// A fresh session of the world in `status`.
async fn session_in(app: &TestApp, w: &World, status: SessionStatus) -> pb::Session {
    let s = scheduled(app, w, slot()).await;
    let c = coordinator();
    let step = |op| apply(app, &c, &s.id, op);
    match status {
        Scheduled => {}
        Queued => {
            // Admission (capacity) comes later; put the session in the queue directly.
            sqlx::query("UPDATE sessions SET status = 'QUEUED', queued_at = now(), deadline = now() + interval '1 hour', deadline_kind = 'QUEUE_TIMEOUT' WHERE id = $1::uuid")
                .bind(&s.id)
                .execute(&app.pool)
                .await
                .expect("queue");
        }
        Active => drop(step(Op::Start).await.expect("start")),
        Paused => {
            step(Op::Start).await.expect("start");
            step(Op::Pause).await.expect("pause");
        }
        Completed => {
            step(Op::Start).await.expect("start");
            step(Op::Complete).await.expect("complete");
        }
        Failed => {
            step(Op::Start).await.expect("start");
            step(Op::Fail).await.expect("fail");
        }
        Cancelled => drop(step(Op::Cancel).await.expect("cancel")),
        SessionStatus::Unspecified => unreachable!(),
    }
    let s = get_session(app, &s.id).await;
    assert_eq!(s.status(), status);
    s
}

#[tokio::test]
async fn every_status_rpc_and_role_gets_the_outcome_of_the_spec_table() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let mut mismatches = Vec::new();
    for status in STATUSES {
        for op in OPS {
            for role in ROLES {
                let before = session_in(&app, &w, status).await;
                let events_before = event_log(&app, &before.id).await.len();
                let got = apply(&app, &role_token(role, &w), &before.id, op).await;
                let after = get_session(&app, &before.id).await;
                let events_after = event_log(&app, &before.id).await;
                let want = spec(status, op, role);
                let outcome = match (&got, want) {
                    (Ok(s), Ok(target)) if s.status() == target && after.status() == target => {
                        // A real change appends exactly one event; a no-op none.
                        let changed = target != status || op == Op::Stage;
                        let expected_events = events_before + usize::from(changed);
                        if events_after.len() == expected_events {
                            None
                        } else {
                            Some(format!("{} events, want {expected_events}", events_after.len()))
                        }
                    }
                    (Err(e), Err(code))
                        if e.code() == code && after.status() == status && events_after.len() == events_before =>
                    {
                        if code == Code::FailedPrecondition {
                            use tonic_types::StatusExt;
                            let info = e.get_details_error_info().expect("ErrorInfo");
                            let ok = info.reason == "INVALID_TRANSITION"
                                && info.metadata.get("current_status").map(String::as_str)
                                    == Some(&status.as_str_name()["SESSION_STATUS_".len()..]);
                            (!ok).then(|| format!("details {info:?}"))
                        } else {
                            None
                        }
                    }
                    _ => Some(format!(
                        "got {:?} (now {:?})",
                        got.as_ref().map(|s| s.status()).map_err(|e| e.code()),
                        after.status()
                    )),
                };
                if let Some(why) = outcome {
                    mismatches.push(format!("{status:?} {op:?} by {role:?}: want {want:?}, {why}"));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// The reference model: the status after `op` by a coordinator, or None if refused.
fn model(status: SessionStatus, op: Op) -> Option<SessionStatus> {
    spec(status, op, Role::Coordinator).ok()
}

#[test]
fn random_operation_sequences_agree_with_the_reference_model() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (app, w) = runtime.block_on(async {
        let app = spawn_with(1, roomy_rules()).await;
        let w = world(&app).await;
        (app, w)
    });
    let ops = proptest::sample::select(OPS.to_vec());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: scale(24, 256) as u32,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(ops, 1..12), |sequence| {
            runtime.block_on(async {
                let s = scheduled(&app, &w, slot()).await;
                let c = coordinator();
                let mut expected = Scheduled;
                let (mut status_changes, mut staged) = (0, false);
                for op in &sequence {
                    let result = apply(&app, &c, &s.id, *op).await;
                    match (model(expected, *op), result) {
                        (Some(next), Ok(got)) => {
                            prop_assert_eq!(got.status(), next, "{:?} from {:?}", op, expected);
                            status_changes += usize::from(next != expected);
                            staged |= *op == Op::Stage;
                            expected = next;
                        }
                        (None, Err(e)) => prop_assert_eq!(e.code(), Code::FailedPrecondition),
                        (want, got) => prop_assert!(
                            false,
                            "{:?} from {:?}: model {:?}, server {:?}",
                            op,
                            expected,
                            want,
                            got.map(|s| s.status())
                        ),
                    }
                }
                // event_log also checks that seq is 1, 2, 3 … without gaps.
                let events = event_log(&app, &s.id).await;
                let statuses: Vec<SessionStatus> = events.iter().map(|e| e.to_status()).collect();
                prop_assert_eq!(statuses.last().copied(), Some(expected));
                prop_assert_eq!(get_session(&app, &s.id).await.status(), expected);
                // Terminal stays terminal: nothing follows the first terminal event.
                if let Some(i) = statuses
                    .iter()
                    .position(|s| matches!(s, Completed | Failed | Cancelled))
                {
                    prop_assert_eq!(i, statuses.len() - 1);
                }
                let count = |t: pb::SessionEventType| events.iter().filter(|e| e.r#type() == t).count();
                prop_assert_eq!(count(pb::SessionEventType::StatusChanged), status_changes);
                prop_assert_eq!(count(pb::SessionEventType::StageChanged), usize::from(staged));
                prop_assert_eq!(events.len(), 1 + status_changes + usize::from(staged));
                Ok(())
            })
        })
        .expect("property holds");
}

/// SPEC §6: a role that may never call an RPC is refused before the request
/// is parsed or any row is read, so a malformed id and an unknown session
/// answer the same PERMISSION_DENIED as a real one.
#[tokio::test]
async fn a_role_that_may_never_call_an_rpc_is_refused_before_parsing_or_reading() {
    let app = spawn_with(1, roomy_rules()).await;
    let w = world(&app).await;
    let real = session_in(&app, &w, Active).await;
    let unknown = Uuid::new_v4().to_string();
    let mut checked = 0;
    for op in OPS {
        for role in [Role::OwnerMentee, Role::OwnerMentor, Role::Service] {
            if spec(Active, op, role) != Err(Code::PermissionDenied)
                || spec(Scheduled, op, role) != Err(Code::PermissionDenied)
            {
                continue;
            }
            for id in ["not-a-uuid", unknown.as_str(), real.id.as_str()] {
                let got = apply(&app, &role_token(role, &w), id, op).await;
                assert_status(got, Code::PermissionDenied, "PERMISSION_DENIED");
                checked += 1;
            }
        }
    }
    // Mentee: pause, resume, complete, fail, stage; mentor: fail; service: start, cancel.
    assert_eq!(checked, 8 * 3);
    assert_eq!(event_log(&app, &real.id).await.len(), 2, "nothing changed");

    // Not even a lock is taken: with the session's row held by another
    // transaction, the refusal still comes at once.
    let mut holder = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1::uuid FOR UPDATE")
        .bind(&real.id)
        .execute(&mut *holder)
        .await
        .expect("lock the row");
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        apply(&app, &w.mentee_token(), &real.id, Op::Complete),
    )
    .await
    .expect("answered without waiting for the row lock");
    assert_status(refused, Code::PermissionDenied, "PERMISSION_DENIED");
    holder.rollback().await.expect("rollback");
}
