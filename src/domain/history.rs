//! A session's history read back (SPEC §4.4): the timeline of its events
//! with the time spent in each state, and two sessions side by side.
//!
//! Every duration comes from the stored event timestamps alone: the time in
//! the state an event entered runs from that event to the next one, or to
//! `now` for the last event of a session that is still running. A terminal
//! event's state lasts zero. So the per-status times sum to the total, which
//! is the span from the first event to the last (or to `now`).

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::config::SessionConfig;
use super::model::{Session, SessionEvent};
use super::session::SessionStatus;

/// A session's events with the time spent in the state each one entered.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub entries: Vec<(SessionEvent, Duration)>,
    /// In the order the session first entered each status.
    pub per_status: Vec<(SessionStatus, Duration)>,
    /// ACTIVE time per stage label, in the order each stage was first set.
    /// Paused time is not stage time, nor is ACTIVE time before the first stage.
    pub per_stage: Vec<(String, Duration)>,
    pub total: Duration,
}

/// Adds `d` to the entry for `key`, appending it on first sight.
fn add<K: PartialEq>(sums: &mut Vec<(K, Duration)>, key: K, d: Duration) {
    match sums.iter_mut().find(|(k, _)| *k == key) {
        Some((_, sum)) => *sum += d,
        None => sums.push((key, d)),
    }
}

/// The timeline of a session from its events in seq order, as of `now`.
///
/// `occurred_at` is its transaction's start, so an event can carry an
/// earlier time than the one before it (a transaction that began first but
/// locked the session second). Time is therefore read on a clock that never
/// goes back: each state starts at the later of its event's time and the end
/// of the state before, so no interval is negative or counted twice and the
/// total is exactly the span the clock covered.
pub(crate) fn timeline(events: Vec<SessionEvent>, now: DateTime<Utc>) -> Timeline {
    let ends: Vec<Option<DateTime<Utc>>> = events
        .iter()
        .skip(1)
        .map(|e| Some(e.occurred_at))
        .chain([None])
        .collect();
    let mut per_status = Vec::new();
    let mut per_stage = Vec::new();
    let mut total = Duration::zero();
    let mut entries = Vec::with_capacity(events.len());
    let mut clock: Option<DateTime<Utc>> = None;
    for (event, end) in events.into_iter().zip(ends) {
        let status = event.to_status;
        let start = clock.map_or(event.occurred_at, |c| c.max(event.occurred_at));
        let end = match end {
            Some(next) => next,
            None if status.is_some_and(SessionStatus::is_terminal) => start,
            None => now,
        }
        .max(start);
        clock = Some(end);
        let spent = end - start;
        total += spent;
        if let Some(status) = status {
            add(&mut per_status, status, spent);
            if let (SessionStatus::Active, Some(stage)) = (status, &event.to_stage) {
                add(&mut per_stage, stage.clone(), spent);
            }
        }
        entries.push((event, spent));
    }
    Timeline {
        entries,
        per_status,
        per_stage,
        total,
    }
}

/// One side of CompareSessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub session: Session,
    pub timeline: Timeline,
}

/// A config field whose values differ: its path (proto field names) and the
/// two values in the proto3 JSON mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDifference {
    pub field: String,
    pub first: Value,
    pub second: Value,
}

/// The config as (path, value) pairs named and written as the proto's JSON
/// mapping (durations as "28800s", enums by name); custom settings one key
/// at a time, as `custom_settings.<key>`.
fn fields(c: &SessionConfig) -> Vec<(String, Value)> {
    let n = &c.notifications;
    let policy = serde_json::to_value(c.escalation_policy).unwrap_or(Value::Null);
    let policy = match policy {
        Value::String(name) => Value::String(format!("ESCALATION_POLICY_{name}")),
        other => other,
    };
    let mut out: Vec<(String, Value)> = vec![
        ("template_id".into(), c.template_id.clone().into()),
        ("max_duration".into(), format!("{}s", c.max_duration_secs).into()),
        (
            "check_in_interval".into(),
            format!("{}s", c.check_in_interval_secs).into(),
        ),
        ("escalation_policy".into(), policy),
        (
            "quality_tier_override".into(),
            c.quality_tier_override.map_or(Value::Null, Value::from),
        ),
        ("notifications.slack".into(), n.slack.into()),
        ("notifications.email".into(), n.email.into()),
        (
            "notifications.notify_on_state_change".into(),
            n.notify_on_state_change.into(),
        ),
        ("notifications.notify_on_blocker".into(), n.notify_on_blocker.into()),
        (
            "notifications.notify_on_escalation".into(),
            n.notify_on_escalation.into(),
        ),
        (
            "notifications.notify_on_completion".into(),
            n.notify_on_completion.into(),
        ),
        ("notifications.notify_on_queued".into(), n.notify_on_queued.into()),
        ("notifications.recipients".into(), n.recipients.clone().into()),
        ("allowed_stages".into(), c.allowed_stages.clone().into()),
    ];
    out.extend(
        c.custom_settings
            .iter()
            .map(|(k, v)| (format!("custom_settings.{k}"), v.clone())),
    );
    out
}

/// The fields whose values differ, field by field; a custom setting only
/// one side has is compared with null.
pub(crate) fn config_differences(first: &SessionConfig, second: &SessionConfig) -> Vec<ConfigDifference> {
    let (a, b) = (fields(first), fields(second));
    let value_in = |side: &[(String, Value)], field: &str| {
        side.iter()
            .find(|(f, _)| f == field)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    let mut names: Vec<&String> = a.iter().map(|(f, _)| f).collect();
    names.extend(b.iter().map(|(f, _)| f).filter(|f| !a.iter().any(|(g, _)| g == *f)));
    names
        .into_iter()
        .filter_map(|field| {
            let (x, y) = (value_in(&a, field), value_in(&b, field));
            (x != y).then(|| ConfigDifference {
                field: field.clone(),
                first: x,
                second: y,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::{Actor, ActorKind};
    use crate::domain::model::EventType;
    use SessionStatus::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn ev(seq: i64, secs: i64, to: SessionStatus, stage: Option<&str>) -> SessionEvent {
        SessionEvent {
            session_id: uuid::Uuid::nil(),
            seq,
            event_type: if seq == 1 {
                EventType::Created
            } else {
                EventType::StatusChanged
            },
            from_status: None,
            to_status: Some(to),
            from_stage: None,
            to_stage: stage.map(str::to_owned),
            actor: Actor {
                kind: ActorKind::System,
                id: String::new(),
            },
            reason: String::new(),
            details: Value::Null,
            occurred_at: at(secs),
        }
    }

    fn secs(d: Duration) -> i64 {
        d.num_seconds()
    }

    #[test]
    fn time_in_state_runs_to_the_next_event_and_paused_time_is_apart() {
        let t = timeline(
            vec![
                ev(1, 0, Scheduled, None),
                ev(2, 100, Active, None),
                ev(3, 130, Active, Some("review")),
                ev(4, 200, Paused, Some("review")),
                ev(5, 500, Active, Some("review")),
                ev(6, 510, Completed, Some("review")),
            ],
            at(10_000),
        );
        let spent: Vec<i64> = t.entries.iter().map(|(_, d)| secs(*d)).collect();
        assert_eq!(spent, [100, 30, 70, 300, 10, 0]);
        let per_status: Vec<_> = t.per_status.iter().map(|(s, d)| (*s, secs(*d))).collect();
        assert_eq!(
            per_status,
            [(Scheduled, 100), (Active, 110), (Paused, 300), (Completed, 0)]
        );
        assert_eq!(t.per_stage, [("review".to_owned(), Duration::seconds(80))]);
        assert_eq!(secs(t.total), 510);
        assert_eq!(t.per_status.iter().map(|(_, d)| *d).sum::<Duration>(), t.total);
    }

    #[test]
    fn a_running_session_counts_its_open_interval_up_to_now() {
        let t = timeline(vec![ev(1, 0, Queued, None), ev(2, 40, Active, None)], at(100));
        let spent: Vec<i64> = t.entries.iter().map(|(_, d)| secs(*d)).collect();
        assert_eq!(spent, [40, 60]);
        assert_eq!(secs(t.total), 100);
        // A clock behind the last event never gives a negative time.
        let t = timeline(vec![ev(1, 0, Active, None)], at(-5));
        assert_eq!(t.total, Duration::zero());
    }

    #[test]
    fn an_event_stamped_before_the_one_ahead_of_it_counts_nothing_twice() {
        // seq 3's transaction began (and was stamped) before seq 2's.
        let t = timeline(
            vec![
                ev(1, 0, Active, None),
                ev(2, 100, Paused, None),
                ev(3, 90, Active, None),
                ev(4, 150, Completed, None),
            ],
            at(1_000),
        );
        let spent: Vec<i64> = t.entries.iter().map(|(_, d)| secs(*d)).collect();
        assert_eq!(spent, [100, 0, 50, 0]);
        assert_eq!(secs(t.total), 150, "the span from the first event to the last");
        assert_eq!(t.per_status.iter().map(|(_, d)| *d).sum::<Duration>(), t.total);
    }

    #[test]
    fn config_differences_name_each_field_that_differs() {
        let a = SessionConfig::default();
        let mut b = SessionConfig {
            max_duration_secs: 2 * 3600,
            quality_tier_override: Some(3),
            ..SessionConfig::default()
        };
        b.notifications.recipients = vec!["a@example.com".into()];
        b.custom_settings.insert("repo".into(), "x".into());
        let diff = config_differences(&a, &b);
        let fields: Vec<&str> = diff.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "max_duration",
                "quality_tier_override",
                "notifications.recipients",
                "custom_settings.repo"
            ]
        );
        assert_eq!(
            (diff[0].first.clone(), diff[0].second.clone()),
            ("28800s".into(), "7200s".into())
        );
        assert_eq!(diff[1].first, Value::Null);
        assert!(config_differences(&a, &a).is_empty());
    }
}
