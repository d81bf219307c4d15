//! The session state machine (SPEC §4.1). The whole transition table is
//! [`TRANSITIONS`]; [`decide`] is the only way a status changes.

use std::str::FromStr;

use super::access::{Actor, Participants, Principal, Role};
use super::{Error, Result, config::EscalationPolicy};

/// Status of a session; COMPLETED, FAILED and CANCELLED are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Scheduled,
    Queued,
    Active,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

use SessionStatus::*;

impl SessionStatus {
    pub const ALL: [SessionStatus; 7] = [Scheduled, Queued, Active, Paused, Completed, Failed, Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Scheduled => "SCHEDULED",
            Queued => "QUEUED",
            Active => "ACTIVE",
            Paused => "PAUSED",
            Completed => "COMPLETED",
            Failed => "FAILED",
            Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Completed | Failed | Cancelled)
    }

    /// ACTIVE and PAUSED sessions hold a concurrency slot (what the capacity limits count).
    pub fn holds_concurrency_slot(self) -> bool {
        matches!(self, Active | Paused)
    }
}

impl FromStr for SessionStatus {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown session status {s:?}"))
    }
}

/// What a caller (or the system) asks of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Pause,
    Resume,
    Complete,
    Fail,
    Cancel,
    AdvanceStage,
    /// The system admits a queued session.
    Promote,
    /// A system timeout fired.
    Timeout,
    /// A participant, coordinator or service records a check-in.
    CheckIn,
    /// The system records a check-in that came due without one.
    MissCheckIn,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Start => "StartSession",
            Command::Pause => "PauseSession",
            Command::Resume => "ResumeSession",
            Command::Complete => "CompleteSession",
            Command::Fail => "FailSession",
            Command::Cancel => "CancelSession",
            Command::AdvanceStage => "AdvanceStage",
            Command::Promote => "promotion",
            Command::Timeout => "timeout",
            Command::CheckIn => "RecordCheckIn",
            Command::MissCheckIn => "missed check-in",
        }
    }

    /// Whether the command acts on the session where it is, rather than
    /// moving it (so from a status to itself it is not a no-op).
    fn acts_in_place(self) -> bool {
        matches!(self, Command::AdvanceStage | Command::CheckIn | Command::MissCheckIn)
    }
}

/// Who may apply a rule.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// Roles allowed on any session.
    pub global: &'static [Role],
    /// Roles allowed on sessions where the caller is that participant.
    pub participants: &'static [Role],
    /// Whether the system (timeouts, promotion) may apply it.
    pub system: bool,
}

/// One row of the SPEC §4.1 table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub command: Command,
    pub from: &'static [SessionStatus],
    pub to: SessionStatus,
    pub allowed: Allowed,
}

const fn people(global: &'static [Role], participants: &'static [Role]) -> Allowed {
    Allowed {
        global,
        participants,
        system: false,
    }
}

const SYSTEM: Allowed = Allowed {
    global: &[],
    participants: &[],
    system: true,
};

use super::Reason;
use Role::{Coordinator, Mentee, Mentor, Service};

/// The transition table of SPEC §4.1. A rule whose `from` equals its `to` is
/// an idempotent no-op (pausing a PAUSED session) or, for AdvanceStage, a
/// change of stage only.
pub const TRANSITIONS: &[Rule] = &[
    Rule {
        command: Command::Start,
        from: &[Scheduled],
        to: Active,
        allowed: people(&[Coordinator], &[Mentee, Mentor]),
    },
    Rule {
        command: Command::Promote,
        from: &[Queued],
        to: Active,
        allowed: SYSTEM,
    },
    Rule {
        command: Command::Pause,
        from: &[Active],
        to: Paused,
        allowed: people(&[Coordinator, Service], &[Mentor]),
    },
    Rule {
        command: Command::Pause,
        from: &[Paused],
        to: Paused,
        allowed: people(&[Coordinator, Service], &[Mentor]),
    },
    Rule {
        command: Command::Resume,
        from: &[Paused],
        to: Active,
        allowed: people(&[Coordinator, Service], &[Mentor]),
    },
    Rule {
        command: Command::Resume,
        from: &[Active],
        to: Active,
        allowed: people(&[Coordinator, Service], &[Mentor]),
    },
    Rule {
        command: Command::Complete,
        from: &[Active],
        to: Completed,
        allowed: people(&[Coordinator, Service], &[Mentor]),
    },
    Rule {
        command: Command::Fail,
        from: &[Active],
        to: Failed,
        allowed: Allowed {
            global: &[Service, Coordinator],
            participants: &[],
            system: true,
        },
    },
    Rule {
        command: Command::Cancel,
        from: &[Scheduled, Queued],
        to: Cancelled,
        allowed: people(&[Coordinator], &[Mentor, Mentee]),
    },
    Rule {
        command: Command::Cancel,
        from: &[Active, Paused],
        to: Cancelled,
        allowed: people(&[Coordinator], &[Mentor]),
    },
    Rule {
        command: Command::AdvanceStage,
        from: &[Active],
        to: Active,
        allowed: people(&[Coordinator, Service], &[Mentor]),
    },
    Rule {
        command: Command::Timeout,
        from: &[Active, Paused, Queued, Scheduled],
        to: Cancelled,
        allowed: SYSTEM,
    },
    Rule {
        command: Command::CheckIn,
        from: &[Active],
        to: Active,
        allowed: people(&[Coordinator, Service], &[Mentee, Mentor]),
    },
    Rule {
        command: Command::MissCheckIn,
        from: &[Active],
        to: Active,
        allowed: SYSTEM,
    },
];

/// Who is asking: a verified caller or the service itself.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    Caller(&'a Principal),
    System,
}

/// The allowed outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub to: SessionStatus,
    /// The actor to record in the event.
    pub actor: Actor,
    /// True when nothing changes (pausing a PAUSED session, resuming an ACTIVE one).
    pub no_op: bool,
}

/// Applies the table: the target status and the actor, or why not.
///
/// A caller whose role could never issue `command` in the current status gets
/// PERMISSION_DENIED; a command with no rule from the current status gets
/// FAILED_PRECONDITION `INVALID_TRANSITION` naming both statuses.
pub fn decide(
    session_id: uuid::Uuid,
    current: SessionStatus,
    command: Command,
    who: Requester<'_>,
    participants: Participants,
) -> Result<Decision> {
    let Some(rule) = TRANSITIONS
        .iter()
        .find(|r| r.command == command && r.from.contains(&current))
    else {
        return Err(invalid_transition(session_id, current, command));
    };
    let actor = match who {
        Requester::System if rule.allowed.system => Actor::system(),
        Requester::System => return Err(invalid_transition(session_id, current, command)),
        Requester::Caller(principal) => principal.require_on(
            rule.allowed.global,
            rule.allowed.participants,
            participants,
            &format!("{} from {}", command.name(), current.as_str()),
        )?,
    };
    Ok(Decision {
        to: rule.to,
        actor,
        no_op: rule.to == current && !command.acts_in_place(),
    })
}

/// The status a command would lead to from its first rule, for error details.
fn requested_status(command: Command) -> Option<SessionStatus> {
    TRANSITIONS.iter().find(|r| r.command == command).map(|r| r.to)
}

fn invalid_transition(session_id: uuid::Uuid, current: SessionStatus, command: Command) -> Error {
    let requested = requested_status(command).map_or("", SessionStatus::as_str);
    Error::precondition(
        Reason::InvalidTransition,
        format!("sessions/{session_id}"),
        format!(
            "{} is not allowed while the session is {}",
            command.name(),
            current.as_str()
        ),
    )
    .with_metadata("current_status", current.as_str())
    .with_metadata("requested_status", requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn setup() -> (Participants, Principal, Principal, Principal) {
        let mentee = Uuid::new_v4();
        let mentor_id = Uuid::new_v4();
        let p = Participants {
            mentee_id: mentee,
            mentor_id,
        };
        (
            p,
            Principal::new(mentee, [Role::Mentee], None),
            Principal::new(Uuid::new_v4(), [Role::Mentor], Some(mentor_id)),
            Principal::new(Uuid::new_v4(), [Role::Service], None),
        )
    }

    #[test]
    fn terminal_statuses_accept_nothing() {
        let (p, _, mentor, _) = setup();
        for status in [Completed, Failed, Cancelled] {
            for command in [
                Command::Start,
                Command::Pause,
                Command::Resume,
                Command::Complete,
                Command::Cancel,
            ] {
                let err = decide(Uuid::nil(), status, command, Requester::Caller(&mentor), p).unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::FailedPrecondition {
                            reason: Reason::InvalidTransition,
                            ..
                        }
                    ),
                    "{status:?} {command:?}"
                );
            }
            assert!(decide(Uuid::nil(), status, Command::Timeout, Requester::System, p).is_err());
        }
    }

    #[test]
    fn mentee_cancels_only_before_it_starts() {
        let (p, mentee, _, _) = setup();
        assert!(decide(Uuid::nil(), Scheduled, Command::Cancel, Requester::Caller(&mentee), p).is_ok());
        let err = decide(Uuid::nil(), Active, Command::Cancel, Requester::Caller(&mentee), p).unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }));
    }

    #[test]
    fn start_is_for_participants_and_coordinators() {
        let (p, mentee, mentor, service) = setup();
        assert_eq!(
            decide(Uuid::nil(), Scheduled, Command::Start, Requester::Caller(&mentee), p)
                .unwrap()
                .to,
            Active
        );
        assert!(decide(Uuid::nil(), Scheduled, Command::Start, Requester::Caller(&mentor), p).is_ok());
        assert!(matches!(
            decide(Uuid::nil(), Scheduled, Command::Start, Requester::Caller(&service), p),
            Err(Error::PermissionDenied { .. })
        ));
    }

    /// The RPC-level role table and the transition table agree: an RPC's
    /// callers are exactly the roles some rule of its command allows.
    #[test]
    fn rpc_roles_are_the_union_of_the_transition_rules() {
        use crate::domain::access::rpc_callers;
        use std::collections::HashSet;
        for command in [
            Command::Start,
            Command::Pause,
            Command::Resume,
            Command::Complete,
            Command::Fail,
            Command::Cancel,
            Command::AdvanceStage,
        ] {
            let from_rules: HashSet<Role> = TRANSITIONS
                .iter()
                .filter(|r| r.command == command)
                .flat_map(|r| r.allowed.global.iter().chain(r.allowed.participants))
                .copied()
                .collect();
            let (_, roles) = rpc_callers(command.name()).expect("every command's RPC has a row");
            let table: HashSet<Role> = roles.iter().copied().collect();
            assert_eq!(table, from_rules, "{}", command.name());
        }
    }

    #[test]
    fn reports_score_from_0_to_100_and_bound_their_data() {
        let none = serde_json::Map::new;
        assert!(report("ok".into(), Some(0), none()).is_ok());
        assert!(report("ok".into(), Some(100), none()).is_ok());
        assert!(report("ok".into(), None, none()).is_ok());
        for bad in [-1, 101, i32::MAX] {
            let err = report("ok".into(), Some(bad), none()).unwrap_err();
            assert!(err.to_string().contains("report.overall_score"), "{err}");
        }
        let mut big = none();
        big.insert("blob".into(), serde_json::Value::String("x".repeat(MAX_DETAILS_BYTES)));
        assert!(report("ok".into(), None, big.clone()).is_err());
        assert!(failure("boom", big).is_err());
        assert_eq!(
            failure("boom", none()).unwrap(),
            serde_json::json!({"error_message": "boom", "details": {}})
        );
    }

    #[test]
    fn pausing_twice_is_a_no_op() {
        let (p, _, mentor, _) = setup();
        let d = decide(Uuid::nil(), Paused, Command::Pause, Requester::Caller(&mentor), p).unwrap();
        assert!(d.no_op);
        let d = decide(Uuid::nil(), Active, Command::Pause, Requester::Caller(&mentor), p).unwrap();
        assert!(!d.no_op);
    }
}

/// Largest encoded report data or failure details.
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;

/// A completion report as stored: a summary, an optional overall score from 0
/// to 100, and free-form data (at most 64 KiB encoded).
pub fn report(
    summary: String,
    overall_score: Option<i32>,
    data: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut v = super::Violations::new();
    if let Some(score) = overall_score
        && !(0..=100).contains(&score)
    {
        v.add("report.overall_score", "must be between 0 and 100");
    }
    v.check(super::input::json_object("report.data", &data, MAX_DETAILS_BYTES));
    v.finish()?;
    Ok(serde_json::json!({
        "summary": summary,
        "overall_score": overall_score,
        "data": data,
    }))
}

/// A failure as stored: the error message and details (at most 64 KiB encoded).
pub fn failure(error_message: &str, details: serde_json::Map<String, serde_json::Value>) -> Result<serde_json::Value> {
    super::input::json_object("details", &details, MAX_DETAILS_BYTES)?;
    Ok(serde_json::json!({ "error_message": error_message, "details": details }))
}

/// Durations after which the system steps in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A SCHEDULED session not started by end_time + this is a no-show.
    pub no_show_grace: chrono::Duration,
    pub pause_timeout: chrono::Duration,
    pub queue_timeout: chrono::Duration,
}

/// The next system deadline of a session and the reason it fires with.
/// Arithmetic is checked: values too large to represent mean no deadline
/// rather than a panic (configs are validated, but stored data is not trusted).
pub fn deadline(s: &super::model::Session, t: &Timeouts) -> Option<(chrono::DateTime<chrono::Utc>, &'static str)> {
    match s.status {
        Scheduled => s.end_time.checked_add_signed(t.no_show_grace).map(|at| (at, "NO_SHOW")),
        Queued => s
            .queued_at?
            .checked_add_signed(t.queue_timeout)
            .map(|at| (at, "QUEUE_TIMEOUT")),
        Active => {
            let max = chrono::Duration::try_seconds(s.config.max_duration_secs)?;
            let left = max.checked_sub(&chrono::Duration::microseconds(s.active_banked_us))?;
            s.active_since?.checked_add_signed(left).map(|at| (at, "TIMEOUT"))
        }
        Paused => s
            .paused_at?
            .checked_add_signed(t.pause_timeout)
            .map(|at| (at, "PAUSE_TIMEOUT")),
        Completed | Failed | Cancelled => None,
    }
}

/// The escalation level after `missed` check-ins missed in a row (SPEC
/// §4.6): IMMEDIATE 3 from the first miss, PROGRESSIVE one level per miss,
/// RELAXED one level per two misses, never above 3.
pub fn escalation_level(policy: EscalationPolicy, missed: i32) -> i32 {
    let missed = missed.max(0);
    match policy {
        EscalationPolicy::Immediate if missed > 0 => 3,
        EscalationPolicy::Immediate => 0,
        EscalationPolicy::Progressive => missed.min(3),
        EscalationPolicy::Relaxed => (missed / 2).min(3),
    }
}

/// When the next check-in of an ACTIVE session is due: once its active time
/// reaches `anchor + check_in_interval × (missed + 1)`. Paused time does not
/// count, so only ACTIVE sessions have one. Checked arithmetic: a value too
/// large to represent means none.
pub fn check_in_due(s: &super::model::Session) -> Option<chrono::DateTime<chrono::Utc>> {
    if s.status != Active {
        return None;
    }
    let interval_us = s.config.check_in_interval_secs.checked_mul(1_000_000)?;
    let due_us = interval_us
        .checked_mul(i64::from(s.check_ins.missed).checked_add(1)?)?
        .checked_add(s.check_ins.anchor_us)?;
    let left = chrono::Duration::microseconds(due_us.checked_sub(s.active_banked_us)?);
    s.active_since?.checked_add_signed(left)
}

/// A check-in recorded at `now`: no misses, no escalation, and the next one
/// due a check_in_interval of active time from now.
pub fn check_in(s: &mut super::model::Session, now: chrono::DateTime<chrono::Utc>) {
    s.check_ins = super::model::CheckIns {
        anchor_us: s.active_duration(now).num_microseconds().unwrap_or(i64::MAX),
        missed: 0,
        level: 0,
    };
}

/// The check-in interval of `s` changed from `before`'s at `now`: the
/// next check-in is due at the sooner of the old due time and one new
/// interval from now (so a shorter interval never counts misses in the
/// past, and a longer one never postpones a check-in already due). Misses
/// and level are kept.
pub fn reschedule_check_ins(
    s: &mut super::model::Session,
    before: &super::model::Session,
    now: chrono::DateTime<chrono::Utc>,
) {
    let (old, new) = (before.config.check_in_interval_secs, s.config.check_in_interval_secs);
    if old == new {
        return;
    }
    let used = s.active_duration(now).num_microseconds().unwrap_or(i64::MAX);
    let rounds = i64::from(s.check_ins.missed).saturating_add(1);
    let old_due = old
        .saturating_mul(1_000_000)
        .saturating_mul(rounds)
        .saturating_add(before.check_ins.anchor_us);
    let due = old_due.min(used.saturating_add(new.saturating_mul(1_000_000)));
    s.check_ins.anchor_us = due.saturating_sub(new.saturating_mul(1_000_000).saturating_mul(rounds));
}

/// A check-in came due without one: one more miss. Returns the new
/// escalation level when it rose.
pub fn miss_check_in(s: &mut super::model::Session) -> Option<i32> {
    let c = &mut s.check_ins;
    c.missed = c.missed.saturating_add(1);
    let level = escalation_level(s.config.escalation_policy, c.missed);
    (level > c.level).then(|| {
        c.level = level;
        level
    })
}

/// Moves a session to `to` at `now`, keeping its clocks right: active time is
/// banked when an ACTIVE stretch ends, and terminal statuses stamp ended_at.
pub fn enter(s: &mut super::model::Session, to: SessionStatus, now: chrono::DateTime<chrono::Utc>) {
    if let Some(since) = s.active_since.take() {
        let stretch = (now - since).num_microseconds().unwrap_or(0).max(0);
        s.active_banked_us = s.active_banked_us.saturating_add(stretch);
    }
    s.paused_at = None;
    match to {
        Active => {
            s.started_at.get_or_insert(now);
            s.active_since = Some(now);
        }
        Paused => s.paused_at = Some(now),
        Queued => s.queued_at = Some(now),
        Completed | Failed | Cancelled => s.ended_at = Some(now),
        Scheduled => {}
    }
    s.status = to;
}

#[cfg(test)]
mod check_in_tests {
    use super::*;
    use crate::domain::model::{CheckIns, Session};
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn escalation_levels_follow_each_policy() {
        let levels = |policy| (0..=7).map(|n| escalation_level(policy, n)).collect::<Vec<_>>();
        assert_eq!(levels(EscalationPolicy::Immediate), [0, 3, 3, 3, 3, 3, 3, 3]);
        assert_eq!(levels(EscalationPolicy::Progressive), [0, 1, 2, 3, 3, 3, 3, 3]);
        assert_eq!(levels(EscalationPolicy::Relaxed), [0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(escalation_level(EscalationPolicy::Progressive, -1), 0);
    }

    fn active(started: chrono::DateTime<Utc>) -> Session {
        let now = started;
        Session {
            id: uuid::Uuid::nil(),
            booking_id: uuid::Uuid::nil(),
            listing_id: uuid::Uuid::nil(),
            mentor_id: uuid::Uuid::nil(),
            mentee_id: uuid::Uuid::nil(),
            start_time: now,
            end_time: now,
            status: Active,
            stage: None,
            config: Default::default(),
            queued_at: None,
            started_at: Some(now),
            ended_at: None,
            active_banked_us: 0,
            active_since: Some(now),
            paused_at: None,
            report: None,
            failure: None,
            cancel_reason: String::new(),
            check_ins: CheckIns::default(),
            last_seq: 1,
            version: 1,
            created_at: now,
            updated_at: now,
            queue: None,
            notes: String::new(),
            metadata: serde_json::json!({}),
            rescheduled_from: None,
            rescheduled_to: None,
            names: Default::default(),
        }
    }

    #[test]
    fn a_check_in_is_due_every_interval_of_active_time_only() {
        let t0 = Utc.with_ymd_and_hms(2027, 1, 4, 9, 0, 0).unwrap();
        let mut s = active(t0);
        let interval = Duration::minutes(30);
        assert_eq!(check_in_due(&s), Some(t0 + interval));
        // Ten minutes active, then paused for an hour: no check-in while paused…
        enter(&mut s, Paused, t0 + Duration::minutes(10));
        assert_eq!(check_in_due(&s), None);
        // …and after resuming, the twenty minutes left.
        let resumed = t0 + Duration::minutes(70);
        enter(&mut s, Active, resumed);
        assert_eq!(check_in_due(&s), Some(resumed + Duration::minutes(20)));
        // A miss: the next is one more interval of active time on.
        assert_eq!(miss_check_in(&mut s), Some(1));
        assert_eq!(check_in_due(&s), Some(resumed + Duration::minutes(50)));
        assert_eq!(miss_check_in(&mut s), Some(2));
        assert_eq!(miss_check_in(&mut s), Some(3));
        assert_eq!(miss_check_in(&mut s), None, "the level stays at 3");
        assert_eq!(s.check_ins.missed, 4);
        // A check-in five minutes later starts over from there.
        let at = resumed + Duration::minutes(5);
        check_in(&mut s, at);
        assert_eq!(
            s.check_ins,
            CheckIns {
                anchor_us: Duration::minutes(15).num_microseconds().unwrap(),
                missed: 0,
                level: 0
            }
        );
        assert_eq!(check_in_due(&s), Some(at + interval));
        // Absurd stored values mean no due time, not a panic.
        s.config.check_in_interval_secs = i64::MAX;
        assert_eq!(check_in_due(&s), None);
    }

    #[test]
    fn a_new_interval_applies_from_now_on() {
        let t0 = Utc.with_ymd_and_hms(2027, 1, 4, 9, 0, 0).unwrap();
        let mut before = active(t0);
        before.config.check_in_interval_secs = 3600;
        let now = t0 + Duration::minutes(55);
        // Shorter: due five minutes from now, not eleven times over already.
        let mut s = before.clone();
        s.config.check_in_interval_secs = 300;
        reschedule_check_ins(&mut s, &before, now);
        assert_eq!(check_in_due(&s), Some(now + Duration::minutes(5)));
        // Longer: still due when it was (five minutes from now).
        let mut s = before.clone();
        s.config.check_in_interval_secs = 7200;
        reschedule_check_ins(&mut s, &before, now);
        assert_eq!(check_in_due(&s), Some(t0 + Duration::minutes(60)));
        // After a miss the rule is the same, and the misses stay.
        let mut missed = before.clone();
        miss_check_in(&mut missed);
        let later = t0 + Duration::minutes(70);
        let mut s = missed.clone();
        s.config.check_in_interval_secs = 600;
        reschedule_check_ins(&mut s, &missed, later);
        assert_eq!(s.check_ins.missed, 1);
        assert_eq!(check_in_due(&s), Some(later + Duration::minutes(10)));
        // Then each miss adds one new interval.
        miss_check_in(&mut s);
        assert_eq!(check_in_due(&s), Some(later + Duration::minutes(20)));
    }

    #[test]
    fn checking_in_acts_on_an_active_session_only_and_is_never_a_no_op() {
        let mentee = uuid::Uuid::new_v4();
        let p = Participants {
            mentee_id: mentee,
            mentor_id: uuid::Uuid::new_v4(),
        };
        let caller = Principal::new(mentee, [Role::Mentee], None);
        let d = decide(
            uuid::Uuid::nil(),
            Active,
            Command::CheckIn,
            Requester::Caller(&caller),
            p,
        )
        .unwrap();
        assert!(!d.no_op);
        for status in [Scheduled, Queued, Paused, Completed] {
            assert!(
                decide(
                    uuid::Uuid::nil(),
                    status,
                    Command::CheckIn,
                    Requester::Caller(&caller),
                    p
                )
                .is_err()
            );
        }
        assert!(
            decide(
                uuid::Uuid::nil(),
                Active,
                Command::MissCheckIn,
                Requester::Caller(&caller),
                p
            )
            .is_err()
        );
        let d = decide(uuid::Uuid::nil(), Active, Command::MissCheckIn, Requester::System, p).unwrap();
        assert!(!d.no_op);
    }
}
