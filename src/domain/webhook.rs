//! Webhook subscriptions and what is sent to them (SPEC §4.6): which
//! committed events a subscription wants, the body of a delivery, its
//! Standard Webhooks signature, and the retry schedule. No I/O here.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::{
    Error, Result,
    booking::{BookingEventKind, BookingStatus},
    config::Notifications,
    model::{BookingFeedEvent, EventType, FeedEvent},
};

/// A subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// The session event types wanted.
    pub event_types: Vec<EventType>,
    /// The booking events wanted, by the status each moves its booking to
    /// (DRAFT: a new booking). Both lists empty: every event, session and
    /// booking; otherwise exactly the ones named.
    pub booking_event_types: Vec<BookingStatus>,
    /// The booking events wanted besides status changes, by kind. All three
    /// lists empty: every event, session and booking.
    pub booking_event_kinds: Vec<BookingEventKind>,
    pub filter: Filter,
    pub enabled: bool,
    /// `whsec_` + base64 key. Never returned by reads.
    pub secret: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which sessions' events a subscription receives; `None` matches all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    pub mentor_id: Option<Uuid>,
    pub mentee_id: Option<Uuid>,
    pub listing_id: Option<Uuid>,
}

impl std::fmt::Debug for Webhook {
    /// Never shows the secret, nor a Slack URL's path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.shown_url())
            .field("event_types", &self.event_types)
            .field("booking_event_types", &self.booking_event_types)
            .field("booking_event_kinds", &self.booking_event_kinds)
            .field("filter", &self.filter)
            .field("enabled", &self.enabled)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Whether this subscription receives the session event `e`: enabled,
    /// of a wanted type, matching the filter, and committed after the
    /// subscription was made.
    pub fn wants(&self, e: &FeedEvent) -> bool {
        (self.wants_everything() || self.event_types.contains(&e.event.event_type))
            && self.admits(e.mentor_id, e.mentee_id, e.listing_id, e.event.occurred_at)
    }

    /// [`Webhook::wants`] for a booking event.
    /// A status change is wanted by its new status; any other kind of
    /// booking event (a reschedule, a DRAFT's new times) by its kind.
    pub fn wants_booking(&self, e: &BookingFeedEvent) -> bool {
        let named = match e.event.kind {
            BookingEventKind::StatusChanged => self.booking_event_types.contains(&e.event.to_status),
            kind => self.booking_event_kinds.contains(&kind),
        };
        (self.wants_everything() || named) && self.admits(e.mentor_id, e.mentee_id, e.listing_id, e.event.occurred_at)
    }

    fn wants_everything(&self) -> bool {
        self.event_types.is_empty() && self.booking_event_types.is_empty() && self.booking_event_kinds.is_empty()
    }

    fn admits(&self, mentor_id: Uuid, mentee_id: Uuid, listing_id: Uuid, at: DateTime<Utc>) -> bool {
        let f = &self.filter;
        self.enabled
            && f.mentor_id.is_none_or(|id| id == mentor_id)
            && f.mentee_id.is_none_or(|id| id == mentee_id)
            && f.listing_id.is_none_or(|id| id == listing_id)
            && at >= self.created_at
    }

    /// The URL as shown back: a Slack incoming-webhook URL is itself a
    /// secret, so its path is hidden.
    pub fn shown_url(&self) -> String {
        match slack_path(&self.url) {
            Some(_) => format!("{SLACK_PREFIX}***"),
            None => self.url.clone(),
        }
    }
}

const SLACK_PREFIX: &str = "https://hooks.slack.com/";

fn slack_path(url: &str) -> Option<&str> {
    url.strip_prefix(SLACK_PREFIX)
}

/// The longest URL accepted.
pub(crate) const MAX_URL: usize = 2048;

/// A subscription's URL: absolute http(s), with a host, at most
/// [`MAX_URL`] characters.
pub(crate) fn check_url(field: &str, raw: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid(field, why);
    if raw.len() > MAX_URL {
        return Err(bad("must be at most 2048 characters"));
    }
    let uri: http::Uri = raw.parse().map_err(|_| bad("must be an absolute http or https URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must be an absolute http or https URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if slack_path(raw).is_some_and(|path| path.contains('*')) {
        return Err(bad(
            "is a Slack URL as shown back (its path hidden); give the whole incoming-webhook URL",
        ));
    }
    Ok(raw.to_owned())
}

/// Why a delivery may not go to `ip`, when it may not (unless the operator
/// allows private targets): the addresses of the service's own host and
/// networks, which a caller could otherwise reach and scan through
/// webhooks. IPv4 inside IPv6 (mapped, compatible, NAT64) counts as the
/// IPv4 address it carries.
pub(crate) fn refused_address(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    /// AWS's instance metadata service over IPv6 (inside fc00::/7).
    const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    fn v4(ip: Ipv4Addr) -> Option<&'static str> {
        let [a, b, ..] = ip.octets();
        Some(match ip {
            // AWS, GCP, Azure, OpenStack (169.254.169.254) and Alibaba Cloud.
            _ if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) => {
                "a cloud metadata address"
            }
            _ if a == 0 => "an unspecified address",
            _ if ip.is_loopback() => "a loopback address",
            _ if ip.is_private() => "a private address (RFC 1918)",
            _ if ip.is_link_local() => "a link-local address",
            _ if ip.is_multicast() => "a multicast address",
            _ if a >= 240 => "a reserved address",
            _ if a == 100 && (b & 0xc0) == 64 => "a shared address (RFC 6598)",
            // IETF protocol assignments (192.0.0.0/24) and benchmarking (198.18.0.0/15).
            _ if (a, b, ip.octets()[2]) == (192, 0, 0) || (a == 198 && (b & 0xfe) == 18) => "a reserved address",
            _ => return None,
        })
    }
    let v6 = match ip {
        IpAddr::V4(ip) => return v4(ip),
        IpAddr::V6(ip) => ip,
    };
    let s = v6.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // 6to4 (2002::/16) carries its IPv4 address in the second and third segments.
    let six_to_four = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
    Some(match v6 {
        _ if v6.is_unspecified() => "an unspecified address",
        _ if v6.is_loopback() => "a loopback address",
        _ if v6 == AWS_METADATA_V6 => "a cloud metadata address",
        _ if v6.is_multicast() => "a multicast address",
        _ if (s[0] & 0xfe00) == 0xfc00 => "a private address (RFC 4193)",
        _ if (s[0] & 0xffc0) == 0xfe80 => "a link-local address",
        _ if (s[0] & 0xffc0) == 0xfec0 => "a site-local address",
        _ if s[..4] == [0x100, 0, 0, 0] => "a discard address (RFC 6666)",
        // ::ffff:a.b.c.d, ::a.b.c.d, ::ffff:0:a.b.c.d, 64:ff9b::a.b.c.d,
        // 64:ff9b:1::/48 (local NAT64) and 6to4.
        _ if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) => return v4(embedded),
        _ if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 => return v4(embedded),
        _ if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => return v4(embedded),
        _ if s[..3] == [0x64, 0xff9b, 1] => return v4(embedded),
        _ if s[0] == 0x2002 => return v4(six_to_four),
        _ => return None,
    })
}

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub(crate) fn new_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// The `webhook-signature` header of a body (Standard Webhooks): `v1,` and
/// the base64 HMAC-SHA256, keyed by the secret's key, of
/// `{id}.{timestamp}.{body}`.
pub(crate) fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored webhook secret is malformed")))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| Error::Internal(e.into()))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!("v1,{signature}"))
}

/// The JSON body of a delivery: Standard Webhooks' `type`, `timestamp` and
/// `data` (the event, and the session's participants).
pub(crate) fn payload(e: &FeedEvent) -> serde_json::Value {
    let ev = &e.event;
    serde_json::json!({
        "type": format!("session.{}", ev.event_type.as_str().to_ascii_lowercase()),
        "timestamp": ev.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {
            "session_id": ev.session_id,
            "seq": ev.seq,
            "event_type": ev.event_type.as_str(),
            "from_status": ev.from_status.map(|s| s.as_str()),
            "to_status": ev.to_status.map(|s| s.as_str()),
            "from_stage": ev.from_stage,
            "to_stage": ev.to_stage,
            "actor": { "kind": ev.actor.kind.as_str(), "id": ev.actor.id },
            "reason": ev.reason,
            "details": ev.details,
            "occurred_at": ev.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "mentor_id": e.mentor_id,
            "mentee_id": e.mentee_id,
            "listing_id": e.listing_id,
        }
    })
}

/// The JSON body of a booking event's delivery: `type` is `booking.` and
/// what happened (created, accepted, declined, cancelled); `data` the
/// entry of the booking's log, and the booking's participants.
pub(crate) fn booking_payload(e: &BookingFeedEvent) -> serde_json::Value {
    let ev = &e.event;
    let happened = match (ev.kind, ev.to_status) {
        (BookingEventKind::Rescheduled, _) => "rescheduled",
        (BookingEventKind::TimeChanged, _) => "time_changed",
        (BookingEventKind::StatusChanged, BookingStatus::Draft) => "created",
        (BookingEventKind::StatusChanged, BookingStatus::Accepted) => "accepted",
        (BookingEventKind::StatusChanged, BookingStatus::Declined) => "declined",
        (BookingEventKind::StatusChanged, BookingStatus::Cancelled) => "cancelled",
    };
    serde_json::json!({
        "type": format!("booking.{happened}"),
        "timestamp": ev.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {
            "booking_id": ev.booking_id,
            "seq": ev.seq,
            "from_status": ev.from_status.map(BookingStatus::as_str),
            "to_status": ev.to_status.as_str(),
            "actor": { "kind": ev.actor.kind.as_str(), "id": ev.actor.id },
            "reason": ev.reason,
            "kind": ev.kind.as_str(),
            "details": ev.details,
            "occurred_at": ev.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "mentor_id": e.mentor_id,
            "mentee_id": e.mentee_id,
            "listing_id": e.listing_id,
        }
    })
}

/// The body POSTed to `url` for `payload`: the payload itself, or Slack's
/// `{"text": …}` for a Slack incoming-webhook URL.
pub(crate) fn body(url: &str, payload: &serde_json::Value) -> serde_json::Value {
    match slack_path(url) {
        Some(_) => slack_body(payload),
        None => payload.clone(),
    }
}

fn slack_body(payload: &serde_json::Value) -> serde_json::Value {
    let data = &payload["data"];
    let mut text = match data["booking_id"].as_str() {
        Some(booking) => format!("Booking {booking} — {}", data["to_status"].as_str().unwrap_or_default()),
        None => format!(
            "Session {} — {}",
            data["session_id"].as_str().unwrap_or_default(),
            data["event_type"].as_str().unwrap_or_default()
        ),
    };
    if let (Some(from), Some(to)) = (data["from_status"].as_str(), data["to_status"].as_str())
        && from != to
    {
        text.push_str(&format!(": {from} → {to}"));
    }
    if let Some(reason) = data["reason"].as_str().filter(|r| !r.is_empty()) {
        text.push_str(&format!(" ({reason})"));
    }
    serde_json::json!({ "text": text })
}

/// The notice a committed event makes, if the session's settings want it
/// (SPEC §4.6): a blocker, an escalation, a completion, a session joining
/// the queue, or any other status change. Each setting covers its kind
/// alone: with `notify_on_completion` off a completion sends nothing, even
/// with `notify_on_state_change` on.
pub(crate) fn notice(e: &super::model::SessionEvent, n: &Notifications) -> Option<&'static str> {
    use super::session::SessionStatus::{Completed, Queued};
    let (kind, wanted) = match e.event_type {
        EventType::BlockerReported => ("blocker", n.notify_on_blocker),
        EventType::Escalated => ("escalation", n.notify_on_escalation),
        EventType::Created | EventType::StatusChanged if e.from_status != e.to_status => match e.to_status {
            Some(Queued) => ("queued", n.notify_on_queued),
            Some(Completed) => ("completion", n.notify_on_completion),
            _ => ("state_change", n.notify_on_state_change),
        },
        _ => return None,
    };
    wanted.then_some(kind)
}

/// The channels a session's notices go out on.
pub(crate) fn channels(n: &Notifications) -> Vec<&'static str> {
    [("slack", n.slack), ("email", n.email)]
        .into_iter()
        .filter_map(|(channel, on)| on.then_some(channel))
        .collect()
}

/// The body of a notification intent: what to tell, on which channel, to
/// whom; the service sends no Slack message or e-mail itself.
pub(crate) fn notification(
    e: &FeedEvent,
    kind: &str,
    channel: &str,
    recipients: &[String],
    estimated_wait: Option<chrono::Duration>,
) -> serde_json::Value {
    let event = payload(e);
    serde_json::json!({
        "type": "notification",
        "timestamp": event["timestamp"],
        "data": {
            "kind": kind,
            "channel": channel,
            "recipients": recipients,
            "session_id": e.event.session_id,
            "seq": e.event.seq,
            "estimated_wait_seconds": estimated_wait.map(|w| w.num_seconds()),
            "event": event["data"],
        }
    })
}

/// The wait before attempt `attempts + 1`, after `attempts` failures:
/// exponential from 1 s, doubling, at most an hour, with `jitter` in
/// `[0, 1)` taking up to half of it away (so failing deliveries spread out).
pub(crate) fn backoff(attempts: u32, jitter: f64) -> Duration {
    let full = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(12)).min(MAX_BACKOFF);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// The longest wait between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        access::{Actor, ActorKind},
        model::SessionEvent,
        session::SessionStatus,
    };

    fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            id: String::new(),
        }
    }

    fn session_event(event_type: EventType, from: Option<SessionStatus>, to: Option<SessionStatus>) -> SessionEvent {
        SessionEvent {
            session_id: Uuid::nil(),
            seq: 1,
            event_type,
            from_status: from,
            to_status: to,
            from_stage: None,
            to_stage: None,
            actor: system(),
            reason: String::new(),
            details: serde_json::Value::Null,
            occurred_at: Utc::now(),
        }
    }

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).expect("sign");
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign("nope", "id", 1, b"").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_an_hour_and_jitter_takes_at_most_half() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 0.0), Duration::from_secs(16));
        assert_eq!(backoff(40, 0.0), MAX_BACKOFF);
        assert_eq!(backoff(5, 0.999_999).as_secs(), 8);
    }

    #[test]
    fn each_setting_covers_its_own_kind_of_notice() {
        use SessionStatus::*;
        let event = |event_type, from, to| session_event(event_type, from, Some(to));
        let all = Notifications::default();
        let cases = [
            (event(EventType::Created, None, Active), Some("state_change")),
            (event(EventType::Created, None, Queued), Some("queued")),
            (
                event(EventType::StatusChanged, Some(Active), Paused),
                Some("state_change"),
            ),
            (
                event(EventType::StatusChanged, Some(Active), Completed),
                Some("completion"),
            ),
            (event(EventType::BlockerReported, Some(Active), Active), Some("blocker")),
            (event(EventType::Escalated, Some(Active), Active), Some("escalation")),
            (event(EventType::CheckedIn, Some(Active), Active), None),
            (event(EventType::StageChanged, Some(Active), Active), None),
        ];
        for (e, kind) in &cases {
            assert_eq!(notice(e, &all), *kind, "{:?}", e.event_type);
        }
        let none = Notifications {
            notify_on_state_change: false,
            notify_on_blocker: false,
            notify_on_escalation: false,
            notify_on_completion: false,
            notify_on_queued: false,
            ..Notifications::default()
        };
        assert!(cases.iter().all(|(e, _)| notice(e, &none).is_none()));
        let only_state = Notifications {
            notify_on_completion: false,
            ..Notifications::default()
        };
        assert_eq!(
            notice(&cases[3].0, &only_state),
            None,
            "a completion is not sent as a state change"
        );
        assert_eq!(channels(&all), ["slack"]);
        assert_eq!(
            channels(&Notifications {
                email: true,
                ..all.clone()
            }),
            ["slack", "email"]
        );
        assert!(channels(&Notifications { slack: false, ..all }).is_empty());
    }

    #[test]
    fn empty_type_lists_want_everything_and_any_list_wants_only_what_it_names() {
        use crate::domain::model::BookingEvent;
        let now = Utc::now();
        let session = FeedEvent {
            event: session_event(EventType::Created, None, None),
            position: (1, 1),
            mentor_id: Uuid::nil(),
            mentee_id: Uuid::nil(),
            listing_id: Uuid::nil(),
        };
        let booking = BookingFeedEvent {
            event: BookingEvent {
                booking_id: Uuid::nil(),
                seq: 1,
                from_status: None,
                to_status: BookingStatus::Draft,
                actor: system(),
                reason: String::new(),
                occurred_at: now,
                kind: BookingEventKind::StatusChanged,
                details: serde_json::json!({}),
            },
            id: 1,
            position: (1, 1),
            mentor_id: Uuid::nil(),
            mentee_id: Uuid::nil(),
            listing_id: Uuid::nil(),
        };
        let hook = |event_types: Vec<EventType>, booking_event_types: Vec<BookingStatus>| Webhook {
            id: Uuid::nil(),
            url: "https://e.com/h".into(),
            event_types,
            booking_event_types,
            booking_event_kinds: vec![],
            filter: Filter::default(),
            enabled: true,
            secret: new_secret(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let wants = |w: &Webhook| (w.wants(&session), w.wants_booking(&booking));
        assert_eq!(wants(&hook(vec![], vec![])), (true, true));
        assert_eq!(wants(&hook(vec![EventType::Created], vec![])), (true, false));
        assert_eq!(wants(&hook(vec![EventType::Escalated], vec![])), (false, false));
        assert_eq!(wants(&hook(vec![], vec![BookingStatus::Draft])), (false, true));
        assert_eq!(wants(&hook(vec![], vec![BookingStatus::Accepted])), (false, false));
        let filtered = Webhook {
            filter: Filter {
                mentee_id: Some(Uuid::max()),
                ..Filter::default()
            },
            ..hook(vec![], vec![])
        };
        assert_eq!(wants(&filtered), (false, false), "the filter applies to both");
        assert_eq!(booking_payload(&booking)["type"], "booking.created");

        // A reschedule is wanted by its kind, not by the status it leaves.
        let moved = BookingFeedEvent {
            event: BookingEvent {
                from_status: Some(BookingStatus::Accepted),
                to_status: BookingStatus::Accepted,
                kind: BookingEventKind::Rescheduled,
                ..booking.event.clone()
            },
            ..booking.clone()
        };
        let by_kind = |kinds: Vec<BookingEventKind>, statuses: Vec<BookingStatus>| Webhook {
            booking_event_kinds: kinds,
            ..hook(vec![], statuses)
        };
        assert!(hook(vec![], vec![]).wants_booking(&moved), "everything");
        assert!(by_kind(vec![BookingEventKind::Rescheduled], vec![]).wants_booking(&moved));
        assert!(!by_kind(vec![], vec![BookingStatus::Accepted]).wants_booking(&moved));
        assert!(!by_kind(vec![BookingEventKind::TimeChanged], vec![]).wants_booking(&moved));
        assert!(!by_kind(vec![BookingEventKind::Rescheduled], vec![]).wants_booking(&booking));
        assert!(
            !by_kind(vec![BookingEventKind::Rescheduled], vec![]).wants(&session),
            "no session events"
        );
        assert_eq!(booking_payload(&moved)["type"], "booking.rescheduled");
        assert_eq!(booking_payload(&moved)["data"]["kind"], "RESCHEDULED");
    }

    #[test]
    fn addresses_inside_are_refused_and_public_ones_allowed() {
        let refused = |ip: &str| refused_address(ip.parse().expect("an address"));
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("100.64.0.1", "shared"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd12:3456::1", "private"),
            ("fd00:ec2::254", "metadata"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("64:ff9b:1::7f00:1", "loopback"),
            ("::ffff:0:7f00:1", "loopback"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a9fe:a9fe::", "metadata"),
            ("fec0::1", "site-local"),
            ("100::1", "discard"),
            ("198.18.0.1", "reserved"),
            ("192.0.0.8", "reserved"),
        ] {
            let got = refused(ip);
            assert!(got.is_some_and(|g| g.contains(why)), "{ip}: {got:?}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    #[test]
    fn urls_are_absolute_http_and_slack_ones_are_hidden() {
        assert!(check_url("u", "https://example.com/hook").is_ok());
        assert!(check_url("u", "http://127.0.0.1:8080/x").is_ok());
        for bad in ["", "example.com", "ftp://example.com/", "https://", "/relative"] {
            assert!(check_url("u", bad).is_err(), "{bad}");
        }
        assert!(check_url("u", &format!("https://e.com/{}", "a".repeat(MAX_URL))).is_err());
        assert!(
            check_url("u", "https://hooks.slack.com/***").is_err(),
            "the shown form is refused"
        );
        let slack = Webhook {
            id: Uuid::nil(),
            url: "https://hooks.slack.com/services/T000/B000/XXXX".into(),
            event_types: vec![],
            booking_event_types: vec![],
            booking_event_kinds: vec![],
            filter: Filter::default(),
            enabled: true,
            secret: new_secret(),
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let text = body(
            &slack.url,
            &serde_json::json!({"data": {"session_id": "s1", "event_type": "CREATED"}}),
        );
        assert_eq!(text, serde_json::json!({"text": "Session s1 — CREATED"}));
        let text = body(
            &slack.url,
            &serde_json::json!({"data": {"booking_id": "b1", "from_status": "DRAFT", "to_status": "ACCEPTED"}}),
        );
        assert_eq!(
            text,
            serde_json::json!({"text": "Booking b1 — ACCEPTED: DRAFT → ACCEPTED"})
        );
        assert_eq!(
            body("https://e.com/h", &serde_json::json!({"a": 1})),
            serde_json::json!({"a": 1})
        );
        let shown = format!("{slack:?}");
        assert!(!shown.contains(&slack.secret) && !shown.contains("XXXX"), "{shown}");
        assert_eq!(slack.shown_url(), "https://hooks.slack.com/***");
        assert!(new_secret().starts_with("whsec_"));
    }
}
