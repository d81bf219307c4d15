//! Capacity (SPEC §4.3): which sessions may hold a concurrency slot.
//!
//! A session holds a *concurrency slot* while ACTIVE or PAUSED; that is what
//! the limits count. (A booking's *time slot*, guarded by the exclusion
//! constraints, is another thing.) Admission, whenever a session would become
//! ACTIVE, checks every limit: the session becomes ACTIVE if all allow it,
//! QUEUED while the queue has room, and is refused (QUEUE_FULL) otherwise.

use std::fmt;

use super::{Error, Reason};

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrency slots one mentee may hold.
    pub per_mentee: i64,
    /// Concurrency slots of the whole system.
    pub system: i64,
    /// Sessions that may wait in the queue.
    pub queue: i64,
}

/// A limit, by what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Mentee,
    Mentor,
    System,
    Queue,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Mentee => "mentee",
            Limit::Mentor => "mentor",
            Limit::System => "system",
            Limit::Queue => "queue",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How full each limit is for one session about to be admitted: the slots
/// held now by its mentee, by its mentor, and whether a system slot is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub mentee_holding: i64,
    pub mentor_holding: i64,
    /// The mentor's own limit (its max_concurrent_sessions, or the default).
    pub mentor_limit: i64,
    pub system_free: bool,
}

/// What admission decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Every limit allows it: ACTIVE.
    Admit,
    /// `Limit` blocks it (the first that does, mentee before mentor before system).
    Wait(Limit),
}

/// Decides admission from the usage, most personal limit first.
pub fn admit(usage: Usage, limits: Limits) -> Admission {
    if usage.mentee_holding >= limits.per_mentee {
        Admission::Wait(Limit::Mentee)
    } else if usage.mentor_holding >= usage.mentor_limit {
        Admission::Wait(Limit::Mentor)
    } else if !usage.system_free {
        Admission::Wait(Limit::System)
    } else {
        Admission::Admit
    }
}

/// The refusal when the queue is full: RESOURCE_EXHAUSTED, reason
/// QUEUE_FULL, with the limit, its current value and its maximum.
pub fn queue_full(queued: i64, limits: Limits) -> Error {
    Error::ResourceExhausted {
        reason: Reason::QueueFull,
        message: format!(
            "every concurrency slot is taken and the queue is full ({queued} of {} sessions wait)",
            limits.queue
        ),
        metadata: vec![
            ("limit", Limit::Queue.to_string()),
            ("current", queued.to_string()),
            ("maximum", limits.queue.to_string()),
        ],
    }
}

/// Where a QUEUED session stands, computed on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInfo {
    /// 1-based, among the queued sessions competing for the limit that blocks it.
    pub position: i64,
    pub estimated_wait: chrono::Duration,
}

/// Queued sessions ahead of one: of its mentor, of its mentee, in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    pub mentor: i64,
    pub mentee: i64,
    pub all: i64,
}

/// A queued session's position and wait: it is counted in the queue of the
/// limit that blocks it now (its mentor's, its mentee's, or the whole queue),
/// and that limit's capacity serves that queue, one typical session at a time.
pub fn standing(usage: Usage, ahead: Ahead, limits: Limits, typical: chrono::Duration) -> QueueInfo {
    let (ahead, capacity) = match admit(usage, limits) {
        Admission::Wait(Limit::Mentee) => (ahead.mentee, limits.per_mentee),
        Admission::Wait(Limit::Mentor) => (ahead.mentor, usage.mentor_limit),
        _ => (ahead.all, limits.system),
    };
    let position = ahead + 1;
    QueueInfo {
        position,
        estimated_wait: estimated_wait(position, capacity, typical),
    }
}

/// Estimated wait of the session at `position` (1-based) in a queue served
/// by `capacity` concurrency slots whose sessions last `typical` each:
/// it is served after `position / capacity` rounds, rounded up.
pub fn estimated_wait(position: i64, capacity: i64, typical: chrono::Duration) -> chrono::Duration {
    let rounds = (position.max(1) + capacity.max(1) - 1) / capacity.max(1);
    typical.checked_mul(rounds as i32).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        per_mentee: 1,
        system: 50,
        queue: 100,
    };

    fn usage(mentee: i64, mentor: i64, system_free: bool) -> Usage {
        Usage {
            mentee_holding: mentee,
            mentor_holding: mentor,
            mentor_limit: 3,
            system_free,
        }
    }

    #[test]
    fn every_limit_must_allow_admission() {
        assert_eq!(admit(usage(0, 2, true), LIMITS), Admission::Admit);
        assert_eq!(admit(usage(1, 0, true), LIMITS), Admission::Wait(Limit::Mentee));
        assert_eq!(admit(usage(0, 3, true), LIMITS), Admission::Wait(Limit::Mentor));
        assert_eq!(admit(usage(0, 0, false), LIMITS), Admission::Wait(Limit::System));
        // The most personal limit is the one reported.
        assert_eq!(admit(usage(1, 3, false), LIMITS), Admission::Wait(Limit::Mentee));
    }

    #[test]
    fn queue_full_names_the_limit_and_its_values() {
        let Error::ResourceExhausted { reason, metadata, .. } = queue_full(100, LIMITS) else {
            panic!("resource exhausted");
        };
        assert_eq!(reason, Reason::QueueFull);
        assert_eq!(
            metadata,
            vec![
                ("limit", "queue".to_owned()),
                ("current", "100".to_owned()),
                ("maximum", "100".to_owned())
            ]
        );
    }

    #[test]
    fn a_queued_session_counts_in_the_queue_of_the_limit_that_blocks_it() {
        let hour = chrono::Duration::hours(1);
        let ahead = Ahead {
            mentor: 2,
            mentee: 0,
            all: 9,
        };
        // Its mentor is full: third in the mentor's queue, served three at a time.
        let info = standing(usage(0, 3, true), ahead, LIMITS, hour);
        assert_eq!((info.position, info.estimated_wait), (3, hour));
        // Only the system blocks it: tenth of the whole queue.
        assert_eq!(standing(usage(0, 0, false), ahead, LIMITS, hour).position, 10);
        // Its mentee holds its one slot: first in the mentee's queue.
        assert_eq!(standing(usage(1, 3, false), ahead, LIMITS, hour).position, 1);
    }

    #[test]
    fn the_wait_grows_by_rounds_of_the_capacity() {
        let hour = chrono::Duration::hours(1);
        assert_eq!(estimated_wait(1, 3, hour), hour);
        assert_eq!(estimated_wait(3, 3, hour), hour);
        assert_eq!(estimated_wait(4, 3, hour), hour * 2);
        assert_eq!(estimated_wait(1, 0, hour), hour, "a zero capacity is treated as one");
    }
}
