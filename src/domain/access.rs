//! Who may do what (SPEC §7): roles, the verified caller, and ownership.

use std::fmt;

use uuid::Uuid;

use super::{Error, Result};

/// A role a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Mentee,
    Mentor,
    Coordinator,
    Service,
}

impl Role {
    /// Parses a role claim; unknown roles are `None` (they grant nothing).
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "mentee" => Some(Role::Mentee),
            "mentor" => Some(Role::Mentor),
            "coordinator" => Some(Role::Coordinator),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Mentee => "mentee",
            Role::Mentor => "mentor",
            Role::Coordinator => "coordinator",
            Role::Service => "service",
        }
    }
}

/// Who made a change, as recorded in audit logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Mentee,
    Mentor,
    Coordinator,
    Service,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Mentee => "MENTEE",
            ActorKind::Mentor => "MENTOR",
            ActorKind::Coordinator => "COORDINATOR",
            ActorKind::Service => "SERVICE",
            ActorKind::System => "SYSTEM",
        }
    }

    pub fn parse(raw: &str) -> Option<ActorKind> {
        Some(match raw {
            "MENTEE" => ActorKind::Mentee,
            "MENTOR" => ActorKind::Mentor,
            "COORDINATOR" => ActorKind::Coordinator,
            "SERVICE" => ActorKind::Service,
            "SYSTEM" => ActorKind::System,
            _ => return None,
        })
    }
}

impl From<Role> for ActorKind {
    fn from(role: Role) -> Self {
        match role {
            Role::Mentee => ActorKind::Mentee,
            Role::Mentor => ActorKind::Mentor,
            Role::Coordinator => ActorKind::Coordinator,
            Role::Service => ActorKind::Service,
        }
    }
}

/// The actor of an audited change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    /// The caller's user id; empty for the system.
    pub id: String,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            kind: ActorKind::System,
            id: String::new(),
        }
    }
}

/// The verified caller, built once per request by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`: the caller's user id (a mentee's id).
    pub user_id: Uuid,
    /// Known roles only, strongest first.
    pub roles: Vec<Role>,
    /// The mentor profile, for callers with the mentor role.
    pub mentor_id: Option<Uuid>,
}

/// The participants of a booking or session, for ownership checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participants {
    pub mentee_id: Uuid,
    pub mentor_id: Uuid,
}

/// Which rows of bookings or sessions a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// Rows where the caller is the mentee or the mentor.
    Own {
        mentee_id: Option<Uuid>,
        mentor_id: Option<Uuid>,
    },
}

impl Principal {
    pub fn new(user_id: Uuid, roles: impl IntoIterator<Item = Role>, mentor_id: Option<Uuid>) -> Self {
        let mut roles: Vec<Role> = roles.into_iter().collect();
        // Strongest first, so the recorded actor kind is the most privileged role that allowed the act.
        roles.sort_by_key(|r| match r {
            Role::Coordinator => 0,
            Role::Service => 1,
            Role::Mentor => 2,
            Role::Mentee => 3,
        });
        roles.dedup();
        Principal {
            user_id,
            roles,
            mentor_id,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    fn actor(&self, role: Role) -> Actor {
        Actor {
            kind: role.into(),
            id: self.user_id.to_string(),
        }
    }

    /// Allows the act when the caller holds one of `roles`; returns the actor to record.
    pub fn require(&self, roles: &[Role], act: &str) -> Result<Actor> {
        self.roles
            .iter()
            .find(|r| roles.contains(r))
            .map(|r| self.actor(*r))
            .ok_or_else(|| Error::denied(format!("{act} needs one of the roles {}", RoleList(roles))))
    }

    /// Whether the caller acting as `role` is this participant.
    pub fn is_participant(&self, role: Role, p: Participants) -> bool {
        match role {
            Role::Mentee => self.has(Role::Mentee) && p.mentee_id == self.user_id,
            Role::Mentor => self.has(Role::Mentor) && self.mentor_id == Some(p.mentor_id),
            Role::Coordinator | Role::Service => false,
        }
    }

    /// Allows the act for any of `global` roles, or for the participants named by
    /// `participant_roles`; returns the actor to record.
    pub fn require_on(&self, global: &[Role], participant_roles: &[Role], p: Participants, act: &str) -> Result<Actor> {
        for role in &self.roles {
            if global.contains(role) || (participant_roles.contains(role) && self.is_participant(*role, p)) {
                return Ok(self.actor(*role));
            }
        }
        Err(Error::denied(format!(
            "{act} is allowed to {}{}",
            RoleList(global),
            if participant_roles.is_empty() {
                String::new()
            } else {
                format!(" and to the participating {}", RoleList(participant_roles))
            }
        )))
    }

    /// Coordinators and services see everything; participants see their own.
    pub fn visibility(&self) -> Visibility {
        if self.has(Role::Coordinator) || self.has(Role::Service) {
            return Visibility::All;
        }
        Visibility::Own {
            mentee_id: self.has(Role::Mentee).then_some(self.user_id),
            mentor_id: if self.has(Role::Mentor) { self.mentor_id } else { None },
        }
    }

    /// Read access to one booking or session: anyone who could list it.
    pub fn can_see(&self, p: Participants) -> bool {
        match self.visibility() {
            Visibility::All => true,
            Visibility::Own { mentee_id, mentor_id } => {
                mentee_id == Some(p.mentee_id) || mentor_id == Some(p.mentor_id)
            }
        }
    }
}

use Role::{Coordinator, Mentee, Mentor, Service};

/// Every known role.
const ANYONE: &[Role] = &[Coordinator, Service, Mentor, Mentee];

/// Every RPC of `mentorship.v1` and the roles that may ever call it: the one
/// table of SPEC §3, §4 and §7 at the level of whole RPCs. The auth layer
/// checks it first, before the request is parsed or any row is read: a
/// caller holding none of these roles gets PERMISSION_DENIED whatever the
/// request says. Ownership (is this the caller's own booking or session?)
/// and the per-status rules of `session::TRANSITIONS` are checked later,
/// where the row is known.
pub(crate) const RPC_CALLERS: &[(&str, &[Role])] = &[
    // DirectoryService: managers manage everything; mentees and mentors manage themselves.
    ("UpsertMentee", &[Coordinator, Service, Mentee]),
    ("GetMentee", ANYONE),
    ("UpsertMentor", &[Coordinator, Service, Mentor]),
    ("GetMentor", ANYONE),
    ("ListMentors", ANYONE),
    ("UpsertListing", &[Coordinator, Service, Mentor]),
    ("GetListing", ANYONE),
    ("ListListings", ANYONE),
    // BookingService (SPEC §3).
    ("CreateBooking", &[Coordinator, Mentee]),
    ("GetBooking", ANYONE),
    ("ListBookings", ANYONE),
    ("AcceptBooking", &[Coordinator, Mentor]),
    ("DeclineBooking", &[Coordinator, Mentor]),
    ("CancelBooking", &[Coordinator, Mentor, Mentee]),
    ("ListBookingEvents", ANYONE),
    ("ListAvailableSlots", ANYONE),
    ("RescheduleBooking", &[Coordinator, Mentor, Mentee]),
    ("BatchGetBookings", ANYONE),
    // SessionService (SPEC §4); transitions as in `session::TRANSITIONS`.
    ("CreateSession", &[Coordinator, Service]),
    ("GetSession", ANYONE),
    ("BatchGetSessions", ANYONE),
    ("UpdateSessionNotes", &[Coordinator, Service, Mentor, Mentee]),
    ("ListSessions", ANYONE),
    ("StartSession", &[Coordinator, Mentor, Mentee]),
    ("PauseSession", &[Coordinator, Service, Mentor]),
    ("ResumeSession", &[Coordinator, Service, Mentor]),
    ("CompleteSession", &[Coordinator, Service, Mentor]),
    ("FailSession", &[Coordinator, Service]),
    ("CancelSession", &[Coordinator, Mentor, Mentee]),
    ("AdvanceStage", &[Coordinator, Service, Mentor]),
    ("RecordCheckIn", &[Coordinator, Service, Mentor, Mentee]),
    ("ListSessionEvents", ANYONE),
    ("GetSessionTimeline", ANYONE),
    ("CompareSessions", ANYONE),
    ("ExportSessions", ANYONE),
    ("GetSessionConfig", ANYONE),
    ("UpdateSessionConfig", &[Coordinator, Service, Mentor]),
    ("ListConfigTemplates", ANYONE),
    ("ReassignMentor", &[Coordinator, Service]),
    ("ListMentorAssignments", ANYONE),
    ("GetQueueStatus", &[Coordinator, Service]),
    ("WatchSession", ANYONE),
    ("WatchSessions", ANYONE),
    // WebhookService: integrations are managed by coordinators and services.
    ("CreateWebhook", GLOBAL_ROLES),
    ("GetWebhook", GLOBAL_ROLES),
    ("ListWebhooks", GLOBAL_ROLES),
    ("UpdateWebhook", GLOBAL_ROLES),
    ("DeleteWebhook", GLOBAL_ROLES),
    ("RotateWebhookSecret", GLOBAL_ROLES),
    ("ListDeliveries", GLOBAL_ROLES),
    ("RetryDelivery", GLOBAL_ROLES),
];

/// The table row of an RPC (by method name, e.g. `StartSession`).
pub(crate) fn rpc_callers(method: &str) -> Option<(&'static str, &'static [Role])> {
    RPC_CALLERS.iter().copied().find(|(name, _)| *name == method)
}

/// Roles that act on every booking and session; the others (mentor, mentee)
/// act only on their own.
const GLOBAL_ROLES: &[Role] = &[Coordinator, Service];

impl Principal {
    /// The first check of every call: may any of the caller's roles ever call
    /// this RPC? Nothing about the request or the stored data is consulted.
    pub fn may_call(&self, method: &str, roles: &[Role]) -> Result<()> {
        if self.roles.iter().any(|r| roles.contains(r)) {
            Ok(())
        } else {
            Err(Error::denied(format!(
                "{method} needs one of the roles {}",
                RoleList(roles)
            )))
        }
    }

    /// The actor to record for `method`: the strongest of the caller's roles
    /// that `RPC_CALLERS` allows it.
    pub fn actor_for(&self, method: &str) -> Result<Actor> {
        let (_, roles) = rpc_callers(method).unwrap_or((method, &[]));
        self.require(roles, method)
    }

    /// Whether the caller holds a role that `method` allows on any row.
    pub fn acts_globally(&self, method: &str) -> bool {
        rpc_callers(method)
            .is_some_and(|(_, roles)| self.roles.iter().any(|r| roles.contains(r) && GLOBAL_ROLES.contains(r)))
    }

    /// Allows `method` on a row with these participants: the coordinators and
    /// services that `RPC_CALLERS` lists act on any row, its mentors and
    /// mentees on their own. Returns the actor to record.
    pub fn act_on(&self, method: &str, p: Participants) -> Result<Actor> {
        let (_, roles) = rpc_callers(method).unwrap_or((method, &[]));
        let (global, participants): (Vec<Role>, Vec<Role>) = roles.iter().partition(|r| GLOBAL_ROLES.contains(r));
        self.require_on(&global, &participants, p, method)
    }
}

struct RoleList<'a>(&'a [Role]);

impl fmt::Display for RoleList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        write!(f, "{}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mentor(mentor_id: Uuid) -> Principal {
        Principal::new(Uuid::new_v4(), [Role::Mentor], Some(mentor_id))
    }

    #[test]
    fn participants_are_matched_by_role() {
        let mentee = Uuid::new_v4();
        let mentor_id = Uuid::new_v4();
        let p = Participants {
            mentee_id: mentee,
            mentor_id,
        };
        assert!(
            mentor(mentor_id)
                .require_on(&[Role::Coordinator], &[Role::Mentor], p, "x")
                .is_ok()
        );
        assert!(
            mentor(Uuid::new_v4())
                .require_on(&[Role::Coordinator], &[Role::Mentor], p, "x")
                .is_err()
        );
        let me = Principal::new(mentee, [Role::Mentee], None);
        assert!(me.require_on(&[], &[Role::Mentor], p, "x").is_err());
        assert!(me.can_see(p));
    }

    #[test]
    fn the_rpc_table_allows_each_role_only_its_rpcs() {
        let mentee = Principal::new(Uuid::new_v4(), [Role::Mentee], None);
        let (method, roles) = rpc_callers("CompleteSession").expect("row");
        let err = mentee.may_call(method, roles).unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { ref message, .. } if message.contains("CompleteSession")),
            "{err}"
        );
        assert!(
            mentee
                .may_call("StartSession", rpc_callers("StartSession").unwrap().1)
                .is_ok()
        );
        let service = Principal::new(Uuid::new_v4(), [Role::Service], None);
        assert!(
            service
                .may_call("StartSession", rpc_callers("StartSession").unwrap().1)
                .is_err()
        );
        assert!(
            service
                .may_call("FailSession", rpc_callers("FailSession").unwrap().1)
                .is_ok()
        );
        assert!(rpc_callers("NoSuchRpc").is_none());
    }

    #[test]
    fn ownership_follows_the_rpc_table() {
        let mentee = Uuid::new_v4();
        let mentor_id = Uuid::new_v4();
        let p = Participants {
            mentee_id: mentee,
            mentor_id,
        };
        let own_mentee = Principal::new(mentee, [Role::Mentee], None);
        let other_mentee = Principal::new(Uuid::new_v4(), [Role::Mentee], None);
        let coordinator = Principal::new(Uuid::new_v4(), [Role::Coordinator], None);
        assert_eq!(own_mentee.act_on("CancelBooking", p).unwrap().kind, ActorKind::Mentee);
        assert!(other_mentee.act_on("CancelBooking", p).is_err());
        assert!(own_mentee.act_on("DeclineBooking", p).is_err(), "mentees never decline");
        assert_eq!(
            coordinator.act_on("DeclineBooking", p).unwrap().kind,
            ActorKind::Coordinator
        );
        assert!(coordinator.acts_globally("UpsertMentee"));
        assert!(!own_mentee.acts_globally("UpsertMentee"));
    }

    #[test]
    fn strongest_role_is_the_actor() {
        let p = Principal::new(Uuid::new_v4(), [Role::Mentee, Role::Coordinator], None);
        let actor = p.require(&[Role::Mentee, Role::Coordinator], "x").unwrap();
        assert_eq!(actor.kind, ActorKind::Coordinator);
    }
}
