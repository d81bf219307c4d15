//! Mentor assignment (SPEC §4.3): who mentors a session started on demand
//! when neither the request nor the listing names a mentor, or when the
//! preferred mentor has no free concurrency slot and the config allows
//! falling back.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How automatic assignment picks among eligible mentors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Fewest sessions holding a concurrency slot; ties to the least recently assigned.
    WorkloadBalanced,
    /// The mentor whose skills put the listing's skill area earliest (a
    /// specialist before a generalist); ties as workload_balanced.
    SkillMatched,
    /// The least recently assigned, whatever the workload.
    RoundRobin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::WorkloadBalanced => "workload_balanced",
            Strategy::SkillMatched => "skill_matched",
            Strategy::RoundRobin => "round_robin",
        }
    }
}

/// The assignment settings of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub strategy: Strategy,
    /// A preferred mentor without a free slot falls back to `strategy`;
    /// without this, the session queues for the preferred mentor.
    pub fallback_to_auto: bool,
}

/// A mentor who accepts sessions and has the listing's skill area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub mentor_id: Uuid,
    /// Where the listing's skill area stands in the mentor's skills (0 = first).
    pub skill_rank: i32,
    /// Concurrency slots it holds now, and its limit.
    pub holding: i64,
    pub limit: i64,
    pub last_assigned_at: Option<DateTime<Utc>>,
}

impl Candidate {
    pub fn has_free_slot(&self) -> bool {
        self.holding < self.limit
    }
}

/// Picks a mentor among the candidates: one with a free concurrency slot
/// (eligible, SPEC §4.3) when there is one, otherwise (every skilled mentor
/// is full) the one the session will queue for; None when nobody has the skill.
pub fn choose(candidates: &[Candidate], strategy: Strategy) -> Option<Uuid> {
    // Never assigned sorts first: None < Some.
    let key = |c: &Candidate| match strategy {
        Strategy::WorkloadBalanced => (!c.has_free_slot(), 0, c.holding, c.last_assigned_at, c.mentor_id),
        Strategy::SkillMatched => (
            !c.has_free_slot(),
            c.skill_rank,
            c.holding,
            c.last_assigned_at,
            c.mentor_id,
        ),
        Strategy::RoundRobin => (!c.has_free_slot(), 0, 0, c.last_assigned_at, c.mentor_id),
    };
    candidates.iter().min_by_key(|c| key(c)).map(|c| c.mentor_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn mentor(n: u128, rank: i32, holding: i64, limit: i64, last: Option<i64>) -> Candidate {
        Candidate {
            mentor_id: Uuid::from_u128(n),
            skill_rank: rank,
            holding,
            limit,
            last_assigned_at: last.map(|h| Utc.with_ymd_and_hms(2026, 1, 1, h as u32, 0, 0).unwrap()),
        }
    }

    #[test]
    fn workload_balanced_takes_the_least_busy_then_the_least_recently_assigned() {
        let candidates = [
            mentor(1, 0, 2, 3, Some(1)),
            mentor(2, 3, 1, 3, Some(5)),
            mentor(3, 1, 1, 3, Some(2)),
        ];
        assert_eq!(
            choose(&candidates, Strategy::WorkloadBalanced),
            Some(Uuid::from_u128(3))
        );
        let never = [mentor(1, 0, 0, 3, Some(1)), mentor(2, 0, 0, 3, None)];
        assert_eq!(choose(&never, Strategy::WorkloadBalanced), Some(Uuid::from_u128(2)));
    }

    #[test]
    fn skill_matched_takes_the_specialist() {
        let candidates = [mentor(1, 2, 0, 3, None), mentor(2, 0, 2, 3, Some(9))];
        assert_eq!(choose(&candidates, Strategy::SkillMatched), Some(Uuid::from_u128(2)));
        assert_eq!(
            choose(&candidates, Strategy::WorkloadBalanced),
            Some(Uuid::from_u128(1))
        );
    }

    #[test]
    fn round_robin_ignores_the_workload() {
        let candidates = [mentor(1, 0, 0, 3, Some(5)), mentor(2, 0, 2, 3, Some(1))];
        assert_eq!(choose(&candidates, Strategy::RoundRobin), Some(Uuid::from_u128(2)));
    }

    #[test]
    fn a_free_slot_comes_first_and_full_mentors_are_the_last_resort() {
        let candidates = [mentor(1, 0, 3, 3, None), mentor(2, 5, 1, 2, Some(9))];
        for s in [Strategy::WorkloadBalanced, Strategy::SkillMatched, Strategy::RoundRobin] {
            assert_eq!(choose(&candidates, s), Some(Uuid::from_u128(2)), "{s:?}");
        }
        let all_full = [mentor(1, 0, 3, 3, Some(2)), mentor(2, 0, 1, 1, Some(1))];
        assert_eq!(choose(&all_full, Strategy::RoundRobin), Some(Uuid::from_u128(2)));
        assert_eq!(choose(&[], Strategy::WorkloadBalanced), None);
    }
}
