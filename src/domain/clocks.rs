//! A session's clocks: its system deadlines (no-show, pause, queue),
//! active time, and the check-ins with their escalation (SPEC §4.2).

use chrono::{DateTime, Utc};

use super::{config::EscalationPolicy, model::Session, session::SessionStatus};
use SessionStatus::*;

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
pub fn deadline(s: &Session, t: &Timeouts) -> Option<(DateTime<Utc>, &'static str)> {
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
pub fn check_in_due(s: &Session) -> Option<DateTime<Utc>> {
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
pub fn check_in(s: &mut Session, now: DateTime<Utc>) {
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
pub fn reschedule_check_ins(s: &mut Session, before: &Session, now: DateTime<Utc>) {
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
pub fn miss_check_in(s: &mut Session) -> Option<i32> {
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
pub fn enter(s: &mut Session, to: SessionStatus, now: DateTime<Utc>) {
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
    use crate::domain::{
        access::{Participants, Principal, Role},
        model::CheckIns,
        session::{Command, Requester, decide},
    };
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
