//! proto ⇄ domain conversions. Input conversions return INVALID_ARGUMENT
//! naming the field; output conversions cannot fail.

use chrono::{DateTime, Utc};
use prost_types::{Duration as PbDuration, Struct, Timestamp, Value, value::Kind};

use super::pb;
use crate::domain::model::etag;
use crate::domain::{
    Error, Result,
    access::{Actor, ActorKind},
    availability::Window,
    booking::{BookingEventKind, BookingOrigin, BookingStatus},
    config::{EscalationPolicy, MAX_ALLOWED_STAGES, MAX_RECIPIENTS, SessionConfig, Template},
    history, input, model,
    query::{LogQuery, MAX_FILTER_VALUES, Page, SortField},
    session::SessionStatus,
};

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(timestamp)
}

/// A required timestamp field.
pub fn time(field: &str, t: Option<&Timestamp>) -> Result<DateTime<Utc>> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    opt_time(field, Some(t))?.ok_or_else(|| Error::invalid(field, "is required"))
}

/// An optional timestamp field; out-of-range values are rejected.
pub fn opt_time(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>> {
    let Some(t) = t else { return Ok(None) };
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be between 0 and 999999999"));
    }
    // Timestamps are valid from year 1 to 9999 (google.protobuf.Timestamp).
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) {
        return Err(Error::invalid(field, "must be between 0001-01-01 and 9999-12-31"));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .map(Some)
        .ok_or_else(|| Error::invalid(field, "is not a valid time"))
}

pub fn duration(d: chrono::Duration) -> PbDuration {
    let micros = d.num_microseconds().unwrap_or(i64::MAX);
    PbDuration {
        seconds: micros / 1_000_000,
        nanos: ((micros % 1_000_000) * 1000) as i32,
    }
}

pub fn json_to_struct(v: &serde_json::Value) -> Option<Struct> {
    match json_to_value(v).kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    }
}

pub fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

pub fn session_status(s: SessionStatus) -> pb::SessionStatus {
    match s {
        SessionStatus::Scheduled => pb::SessionStatus::Scheduled,
        SessionStatus::Queued => pb::SessionStatus::Queued,
        SessionStatus::Active => pb::SessionStatus::Active,
        SessionStatus::Paused => pb::SessionStatus::Paused,
        SessionStatus::Completed => pb::SessionStatus::Completed,
        SessionStatus::Failed => pb::SessionStatus::Failed,
        SessionStatus::Cancelled => pb::SessionStatus::Cancelled,
    }
}

/// A page: size (0 means 20, at most 100) and token.
pub fn page(size: i32, token: &str) -> Result<Page> {
    Ok(Page {
        size: input::page_size(size)?,
        token: token.to_owned(),
    })
}

/// A page of the log of the resource named by `field` (ListSessionEvents,
/// ListMentorAssignments, ListBookingEvents).
pub fn log_query(field: &str, id: &str, size: i32, token: &str) -> Result<LogQuery> {
    let mut v = crate::domain::Violations::new();
    let of = v.check(input::id(field, id));
    let page = v.check(page(size, token));
    v.into_result(of.zip(page).map(|(of, page)| LogQuery { of, page }))
}

/// An optional Struct as a JSON object (empty when absent).
pub fn struct_to_map(s: Option<&Struct>) -> serde_json::Map<String, serde_json::Value> {
    match s.map(struct_to_json) {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Status names of a filter, each once, in the order first given.
fn distinct(names: Vec<&'static str>) -> Vec<&'static str> {
    let mut seen = Vec::with_capacity(names.len());
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

/// A repeated SessionStatus filter field.
pub fn session_statuses(field: &str, raw: &[i32]) -> Result<Vec<&'static str>> {
    input::at_most(field, raw.len(), MAX_FILTER_VALUES)?;
    raw.iter()
        .map(|&n| match pb::SessionStatus::try_from(n) {
            Ok(pb::SessionStatus::Unspecified) | Err(_) => {
                Err(Error::invalid(field, format!("{n} is not a session status")))
            }
            Ok(pb::SessionStatus::Scheduled) => Ok("SCHEDULED"),
            Ok(pb::SessionStatus::Queued) => Ok("QUEUED"),
            Ok(pb::SessionStatus::Active) => Ok("ACTIVE"),
            Ok(pb::SessionStatus::Paused) => Ok("PAUSED"),
            Ok(pb::SessionStatus::Completed) => Ok("COMPLETED"),
            Ok(pb::SessionStatus::Failed) => Ok("FAILED"),
            Ok(pb::SessionStatus::Cancelled) => Ok("CANCELLED"),
        })
        .collect::<Result<_>>()
        .map(distinct)
}

/// A repeated BookingStatus filter field.
pub fn booking_statuses(field: &str, raw: &[i32]) -> Result<Vec<&'static str>> {
    input::at_most(field, raw.len(), MAX_FILTER_VALUES)?;
    raw.iter()
        .map(|&n| match pb::BookingStatus::try_from(n) {
            Ok(pb::BookingStatus::Unspecified) | Err(_) => {
                Err(Error::invalid(field, format!("{n} is not a booking status")))
            }
            Ok(pb::BookingStatus::Draft) => Ok("DRAFT"),
            Ok(pb::BookingStatus::Accepted) => Ok("ACCEPTED"),
            Ok(pb::BookingStatus::Declined) => Ok("DECLINED"),
            Ok(pb::BookingStatus::Cancelled) => Ok("CANCELLED"),
        })
        .collect::<Result<_>>()
        .map(distinct)
}

pub fn booking_status(s: BookingStatus) -> pb::BookingStatus {
    match s {
        BookingStatus::Draft => pb::BookingStatus::Draft,
        BookingStatus::Accepted => pb::BookingStatus::Accepted,
        BookingStatus::Declined => pb::BookingStatus::Declined,
        BookingStatus::Cancelled => pb::BookingStatus::Cancelled,
    }
}

impl From<model::BookingEvent> for pb::BookingEvent {
    fn from(e: model::BookingEvent) -> Self {
        pb::BookingEvent {
            booking_id: e.booking_id.to_string(),
            seq: e.seq,
            from_status: e.from_status.map_or(0, |s| booking_status(s) as i32),
            to_status: booking_status(e.to_status) as i32,
            actor: Some(actor(&e.actor)),
            reason: e.reason,
            occurred_at: Some(timestamp(e.occurred_at)),
            kind: booking_event_kind(e.kind) as i32,
            details: json_to_struct(&e.details),
        }
    }
}

pub fn booking_event_kind(k: BookingEventKind) -> pb::BookingEventKind {
    match k {
        BookingEventKind::StatusChanged => pb::BookingEventKind::StatusChanged,
        BookingEventKind::Rescheduled => pb::BookingEventKind::Rescheduled,
        BookingEventKind::TimeChanged => pb::BookingEventKind::TimeChanged,
    }
}

/// An id that may be absent, as the API shows it ("" for none).
fn opt_id(id: Option<uuid::Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

fn actor(a: &Actor) -> pb::Actor {
    let kind = match a.kind {
        ActorKind::Mentee => pb::ActorKind::Mentee,
        ActorKind::Mentor => pb::ActorKind::Mentor,
        ActorKind::Coordinator => pb::ActorKind::Coordinator,
        ActorKind::Service => pb::ActorKind::Service,
        ActorKind::System => pb::ActorKind::System,
    };
    pb::Actor {
        kind: kind as i32,
        id: a.id.clone(),
    }
}

impl From<model::Mentee> for pb::Mentee {
    fn from(m: model::Mentee) -> Self {
        pb::Mentee {
            id: m.id.to_string(),
            display_name: m.display_name,
            created_at: Some(timestamp(m.created_at)),
            updated_at: Some(timestamp(m.updated_at)),
        }
    }
}

impl From<model::Mentor> for pb::Mentor {
    fn from(m: model::Mentor) -> Self {
        pb::Mentor {
            id: m.id.to_string(),
            user_id: m.user_id.to_string(),
            display_name: m.display_name,
            skill_areas: m.skill_areas,
            max_concurrent_sessions: m.max_concurrent_sessions,
            accepting_sessions: m.accepting_sessions,
            timezone: m.timezone,
            availability: m.availability.iter().map(window).collect(),
            active_session_count: i32::try_from(m.active_session_count).unwrap_or(i32::MAX),
            created_at: Some(timestamp(m.created_at)),
            updated_at: Some(timestamp(m.updated_at)),
        }
    }
}

fn window(w: &Window) -> pb::AvailabilityWindow {
    pb::AvailabilityWindow {
        day_of_week: i32::from(w.day_of_week),
        start_local_time: Window::format_minute(w.start_minute),
        end_local_time: Window::format_minute(w.end_minute),
    }
}

impl From<model::Listing> for pb::Listing {
    fn from(l: model::Listing) -> Self {
        pb::Listing {
            id: l.id.to_string(),
            mentor_id: l.mentor_id.map(|m| m.to_string()).unwrap_or_default(),
            title: l.title,
            skill_area: l.skill_area,
            created_at: Some(timestamp(l.created_at)),
            updated_at: Some(timestamp(l.updated_at)),
        }
    }
}

impl From<model::Booking> for pb::Booking {
    fn from(b: model::Booking) -> Self {
        pb::Booking {
            id: b.id.to_string(),
            listing_id: b.listing_id.to_string(),
            mentor_id: b.mentor_id.to_string(),
            mentee_id: b.mentee_id.to_string(),
            start_time: Some(timestamp(b.start_time)),
            end_time: Some(timestamp(b.end_time)),
            status: booking_status(b.status) as i32,
            notes: b.notes,
            origin: match b.origin {
                BookingOrigin::Requested => pb::BookingOrigin::Requested,
                BookingOrigin::OnDemand => pb::BookingOrigin::OnDemand,
            } as i32,
            reason: b.reason,
            session_id: opt_id(b.session_id),
            created_at: Some(timestamp(b.created_at)),
            updated_at: Some(timestamp(b.updated_at)),
            etag: etag(b.version),
            rescheduled_from: opt_id(b.rescheduled_from),
            rescheduled_to: opt_id(b.rescheduled_to),
            mentee_display_name: b.names.mentee,
            mentor_display_name: b.names.mentor,
            listing_title: b.names.listing_title,
        }
    }
}

pub fn session_config(c: &SessionConfig) -> pb::SessionConfig {
    pb::SessionConfig {
        template_id: c.template_id.clone(),
        max_duration: Some(duration(chrono::Duration::seconds(c.max_duration_secs))),
        check_in_interval: Some(duration(chrono::Duration::seconds(c.check_in_interval_secs))),
        escalation_policy: match c.escalation_policy {
            EscalationPolicy::Progressive => pb::EscalationPolicy::Progressive,
            EscalationPolicy::Immediate => pb::EscalationPolicy::Immediate,
            EscalationPolicy::Relaxed => pb::EscalationPolicy::Relaxed,
        } as i32,
        quality_tier_override: c.quality_tier_override,
        notifications: Some(pb::NotificationSettings {
            slack: c.notifications.slack,
            email: c.notifications.email,
            notify_on_state_change: c.notifications.notify_on_state_change,
            notify_on_blocker: c.notifications.notify_on_blocker,
            notify_on_escalation: c.notifications.notify_on_escalation,
            notify_on_completion: c.notifications.notify_on_completion,
            notify_on_queued: Some(c.notifications.notify_on_queued),
            recipients: c.notifications.recipients.clone(),
        }),
        custom_settings: json_to_struct(&serde_json::Value::Object(c.custom_settings.clone())),
        allowed_stages: c.allowed_stages.clone(),
    }
}

impl From<model::Session> for pb::Session {
    fn from(s: model::Session) -> Self {
        let now = Utc::now();
        let (report, failure) = (report(&s), failure(&s));
        let check_in_due = crate::domain::clocks::check_in_due(&s);
        pb::Session {
            id: s.id.to_string(),
            booking_id: s.booking_id.to_string(),
            listing_id: s.listing_id.to_string(),
            mentor_id: s.mentor_id.to_string(),
            mentee_id: s.mentee_id.to_string(),
            start_time: Some(timestamp(s.start_time)),
            end_time: Some(timestamp(s.end_time)),
            status: session_status(s.status) as i32,
            stage: s.stage.clone().unwrap_or_default(),
            config: Some(session_config(&s.config)),
            queue_position: s.queue.map_or(0, |q| i32::try_from(q.position).unwrap_or(i32::MAX)),
            estimated_wait: s.queue.map(|q| duration(q.estimated_wait)),
            started_at: opt_timestamp(s.started_at),
            ended_at: opt_timestamp(s.ended_at),
            active_duration: Some(duration(s.active_duration(now))),
            report,
            failure,
            cancel_reason: s.cancel_reason.clone(),
            created_at: Some(timestamp(s.created_at)),
            updated_at: Some(timestamp(s.updated_at)),
            etag: etag(s.version),
            check_in_due_time: opt_timestamp(check_in_due),
            missed_check_ins: s.check_ins.missed,
            escalation_level: s.check_ins.level,
            mentee_display_name: s.names.mentee,
            mentor_display_name: s.names.mentor,
            listing_title: s.names.listing_title,
            notes: s.notes,
            metadata: json_to_struct(&s.metadata),
            rescheduled_from: opt_id(s.rescheduled_from),
            rescheduled_to: opt_id(s.rescheduled_to),
        }
    }
}

fn report(s: &model::Session) -> Option<pb::SessionReport> {
    s.report.as_ref().map(|r| pb::SessionReport {
        summary: r["summary"].as_str().unwrap_or_default().to_owned(),
        overall_score: r["overall_score"].as_i64().and_then(|n| i32::try_from(n).ok()),
        data: json_to_struct(&r["data"]),
    })
}

fn failure(s: &model::Session) -> Option<pb::SessionFailure> {
    s.failure.as_ref().map(|f| pb::SessionFailure {
        error_message: f["error_message"].as_str().unwrap_or_default().to_owned(),
        details: json_to_struct(&f["details"]),
    })
}

fn status_durations(t: &history::Timeline) -> Vec<pb::StatusDuration> {
    t.per_status
        .iter()
        .map(|(s, d)| pb::StatusDuration {
            status: session_status(*s) as i32,
            duration: Some(duration(*d)),
        })
        .collect()
}

fn stage_durations(t: &history::Timeline) -> Vec<pb::StageDuration> {
    t.per_stage
        .iter()
        .map(|(s, d)| pb::StageDuration {
            stage: s.clone(),
            duration: Some(duration(*d)),
        })
        .collect()
}

impl From<(model::Session, history::Timeline)> for pb::GetSessionTimelineResponse {
    fn from((s, t): (model::Session, history::Timeline)) -> Self {
        pb::GetSessionTimelineResponse {
            session_id: s.id.to_string(),
            time_per_status: status_durations(&t),
            time_per_stage: stage_durations(&t),
            total_duration: Some(duration(t.total)),
            entries: t
                .entries
                .into_iter()
                .map(|(e, d)| pb::TimelineEntry {
                    event: Some(e.into()),
                    time_in_state: Some(duration(d)),
                })
                .collect(),
        }
    }
}

impl From<history::Summary> for pb::SessionSummary {
    fn from(sum: history::Summary) -> Self {
        let t = &sum.timeline;
        pb::SessionSummary {
            session_id: sum.session.id.to_string(),
            status: session_status(sum.session.status) as i32,
            time_per_status: status_durations(t),
            time_per_stage: stage_durations(t),
            event_count: i32::try_from(t.entries.len()).unwrap_or(i32::MAX),
            total_duration: Some(duration(t.total)),
            report: report(&sum.session),
            failure: failure(&sum.session),
        }
    }
}

impl From<history::ConfigDifference> for pb::ConfigDifference {
    fn from(d: history::ConfigDifference) -> Self {
        pb::ConfigDifference {
            field: d.field,
            first: Some(json_to_value(&d.first)),
            second: Some(json_to_value(&d.second)),
        }
    }
}

impl From<model::SessionEvent> for pb::SessionEvent {
    fn from(e: model::SessionEvent) -> Self {
        pb::SessionEvent {
            session_id: e.session_id.to_string(),
            seq: e.seq,
            r#type: match e.event_type {
                model::EventType::Created => pb::SessionEventType::Created,
                model::EventType::StatusChanged => pb::SessionEventType::StatusChanged,
                model::EventType::StageChanged => pb::SessionEventType::StageChanged,
                model::EventType::ConfigUpdated => pb::SessionEventType::ConfigUpdated,
                model::EventType::MentorAssigned => pb::SessionEventType::MentorAssigned,
                model::EventType::CheckedIn => pb::SessionEventType::CheckedIn,
                model::EventType::BlockerReported => pb::SessionEventType::BlockerReported,
                model::EventType::CheckInMissed => pb::SessionEventType::CheckInMissed,
                model::EventType::Escalated => pb::SessionEventType::Escalated,
                model::EventType::NotesUpdated => pb::SessionEventType::NotesUpdated,
            } as i32,
            from_status: e.from_status.map_or(0, |s| session_status(s) as i32),
            to_status: e.to_status.map_or(0, |s| session_status(s) as i32),
            from_stage: e.from_stage.unwrap_or_default(),
            to_stage: e.to_stage.unwrap_or_default(),
            actor: Some(actor(&e.actor)),
            reason: e.reason,
            details: json_to_struct(&e.details),
            occurred_at: Some(timestamp(e.occurred_at)),
        }
    }
}

/// A SessionConfig from the wire, for the fields named by `paths` (others are
/// taken as given but ignored by the mask). Durations are whole seconds. The
/// caller bounds `paths` (`config::MAX_MASK_PATHS`).
pub fn config_patch(c: &pb::SessionConfig, paths: &[String], prefix: &str) -> Result<SessionConfig> {
    let mut v = crate::domain::Violations::new();
    let named = |p: &str| paths.iter().any(|x| x == p);
    let secs = |d: &Option<PbDuration>, field: &str, v: &mut crate::domain::Violations| -> i64 {
        match d {
            Some(d) if d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos) => d.seconds,
            Some(_) => {
                v.add(format!("{prefix}.{field}"), "must be a non-negative duration");
                0
            }
            None if named(field) => {
                v.add(format!("{prefix}.{field}"), "is required when named in the mask");
                0
            }
            None => 0,
        }
    };
    let max_duration_secs = secs(&c.max_duration, "max_duration", &mut v);
    let check_in_interval_secs = secs(&c.check_in_interval, "check_in_interval", &mut v);
    let escalation_policy = match pb::EscalationPolicy::try_from(c.escalation_policy) {
        Ok(pb::EscalationPolicy::Progressive) => EscalationPolicy::Progressive,
        Ok(pb::EscalationPolicy::Immediate) => EscalationPolicy::Immediate,
        Ok(pb::EscalationPolicy::Relaxed) => EscalationPolicy::Relaxed,
        Ok(pb::EscalationPolicy::Unspecified) | Err(_) => {
            if named("escalation_policy") {
                v.add(
                    format!("{prefix}.escalation_policy"),
                    "must be PROGRESSIVE, IMMEDIATE or RELAXED",
                );
            }
            EscalationPolicy::Progressive
        }
    };
    let n = c.notifications.as_ref();
    let recipients = n.map(|n| n.recipients.as_slice()).unwrap_or_default();
    // Lists are refused by their length before anything copies them.
    v.check(input::at_most(
        &format!("{prefix}.notifications.recipients"),
        recipients.len(),
        MAX_RECIPIENTS,
    ));
    v.check(input::at_most(
        &format!("{prefix}.allowed_stages"),
        c.allowed_stages.len(),
        MAX_ALLOWED_STAGES,
    ));
    v.finish()?;
    let n = n.cloned().unwrap_or_default();
    Ok(SessionConfig {
        template_id: String::new(),
        max_duration_secs,
        check_in_interval_secs,
        escalation_policy,
        quality_tier_override: c.quality_tier_override,
        notifications: crate::domain::config::Notifications {
            slack: n.slack,
            email: n.email,
            notify_on_state_change: n.notify_on_state_change,
            notify_on_blocker: n.notify_on_blocker,
            notify_on_escalation: n.notify_on_escalation,
            notify_on_completion: n.notify_on_completion,
            // Unset reads as on: the default, for clients that predate it.
            notify_on_queued: n.notify_on_queued.unwrap_or(true),
            recipients: n.recipients,
        },
        custom_settings: struct_to_map(c.custom_settings.as_ref()),
        allowed_stages: c.allowed_stages.clone(),
    })
}

impl From<model::MentorAssignment> for pb::MentorAssignment {
    fn from(a: model::MentorAssignment) -> Self {
        pb::MentorAssignment {
            session_id: a.session_id.to_string(),
            mentor_id: a.mentor_id.to_string(),
            previous_mentor_id: a.previous_mentor_id.map(|m| m.to_string()).unwrap_or_default(),
            strategy: a.strategy,
            reason: a.reason,
            actor: Some(actor(&a.actor)),
            assigned_at: Some(timestamp(a.assigned_at)),
        }
    }
}

impl From<&Template> for pb::ConfigTemplate {
    fn from(t: &Template) -> Self {
        pb::ConfigTemplate {
            id: t.id.clone(),
            name: t.name.clone(),
            config: Some(session_config(&t.config)),
        }
    }
}

/// `order_by`: "created_at" (default) or "start_time", optionally " desc" / " asc".
pub fn order_by(raw: &str) -> Result<(SortField, bool)> {
    let mut parts = raw.split_whitespace();
    let field = match parts.next() {
        None | Some("created_at") => SortField::CreatedAt,
        Some("start_time") => SortField::StartTime,
        Some(other) => {
            return Err(Error::invalid(
                "order_by",
                format!(
                    "cannot sort by {:?}; use created_at or start_time",
                    input::truncate(other)
                ),
            ));
        }
    };
    let descending = match parts.next() {
        None => raw.is_empty(),
        Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(Error::invalid(
                "order_by",
                format!("direction {:?} is not asc or desc", input::truncate(other)),
            ));
        }
    };
    if parts.next().is_some() {
        return Err(Error::invalid("order_by", "expected `<field> [asc|desc]`"));
    }
    Ok((field, descending))
}

/// A whole-minute duration between `min` and `max` minutes; `field` names it.
pub fn minutes(field: &str, d: Option<&PbDuration>, min: i64, max: i64) -> Result<Option<chrono::Duration>> {
    let Some(d) = d else { return Ok(None) };
    let whole = d.nanos == 0 && d.seconds % 60 == 0;
    if !whole || d.seconds < min * 60 || d.seconds > max * 60 {
        return Err(Error::invalid(
            field,
            format!("must be whole minutes, from {min} to {max} minutes"),
        ));
    }
    Ok(Some(chrono::Duration::seconds(d.seconds)))
}
