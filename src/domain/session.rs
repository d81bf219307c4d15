//! The session state machine (SPEC §4.1). The whole transition table is
//! [`TRANSITIONS`]; [`decide`] is the only way a status changes.

use std::str::FromStr;

use super::access::{Actor, Participants, Principal, Role};
use super::{Error, Result};

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
pub(crate) struct Allowed {
    /// Roles allowed on any session.
    pub global: &'static [Role],
    /// Roles allowed on sessions where the caller is that participant.
    pub participants: &'static [Role],
    /// Whether the system (timeouts, promotion) may apply it.
    pub system: bool,
}

/// One row of the SPEC §4.1 table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
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
pub(crate) const TRANSITIONS: &[Rule] = &[
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
pub(crate) struct Decision {
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
pub(crate) fn decide(
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
    use crate::domain::report::{MAX_DETAILS_BYTES, failure, report};
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
