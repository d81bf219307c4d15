//! Webhook deliveries (SPEC §4.6) on every replica: the dispatcher
//! ([`dispatch_once`]) fans each committed event out to the subscriptions
//! that want it, once; the deliverer ([`deliver_once`]) claims, signs, POSTs
//! and records them, in order per subscription and session.
//!
//! What it keeps true: only committed events are delivered, each at least
//! once and under one `webhook-id`, and a slow or dead endpoint holds back
//! only its own deliveries, never a write of the API. How:
//! docs/ARCHITECTURE.md, "Webhooks: deliveries from committed events".

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{App, targets::Targets};
use crate::domain::{Result, webhook};
use crate::store::{bookings, deliveries, sessions, webhooks as store};

/// Events read per dispatch.
const PAGE: i64 = 500;
/// Deliveries claimed per round.
const BATCH: i64 = 64;
/// The longest the loop sleeps without news (deliveries retried later, and
/// other replicas' commits).
const IDLE: Duration = Duration::from_millis(500);

/// Fans the committed session and booking events after the cursor out to
/// the matching subscriptions; returns how many events it read (0 when
/// another replica holds the cursor).
pub async fn dispatch_once(app: &App) -> Result<usize> {
    let mut tx = deliveries::begin(&app.pool).await?;
    let Some(mut cursor) = deliveries::lock_cursor(&mut tx).await? else {
        return Ok(0);
    };
    let page = crate::store::feed::feed_page(&mut *tx, cursor.sessions, PAGE)
        .await?
        .events;
    let booking_page = bookings::feed_page(&mut *tx, cursor.bookings, PAGE).await?;
    if page.is_empty() && booking_page.is_empty() {
        return Ok(0);
    }
    let subscriptions = store::enabled(&mut *tx).await?;
    let mut new = Vec::new();
    for e in &page {
        new.extend(fan_out(
            &subscriptions,
            |w| w.wants(e),
            || webhook::payload(e),
            |w, payload| deliveries::NewDelivery {
                webhook_id: w.id,
                subject: deliveries::Subject::Session,
                subject_id: e.event.session_id,
                seq: e.event.seq,
                event_id: None,
                channel: "",
                event_type: e.event.event_type.as_str(),
                payload,
            },
        ));
    }
    for e in &booking_page {
        new.extend(fan_out(
            &subscriptions,
            |w| w.wants_booking(e),
            || webhook::booking_payload(e),
            |w, payload| deliveries::NewDelivery {
                webhook_id: w.id,
                subject: deliveries::Subject::Booking,
                subject_id: e.event.booking_id,
                seq: e.event.seq,
                event_id: Some(e.id),
                channel: "",
                event_type: e.event.to_status.as_str(),
                payload,
            },
        ));
    }
    if let Some(endpoint) = store::notification_endpoint(&mut *tx).await? {
        new.extend(notices(app, &mut tx, &endpoint, &page).await?);
    }
    deliveries::insert_deliveries(&mut tx, &new).await?;
    if let Some(last) = page.last() {
        cursor.sessions = last.position;
    }
    if let Some(last) = booking_page.last() {
        cursor.bookings = last.position;
    }
    deliveries::set_cursor(&mut tx, cursor).await?;
    crate::store::commit(tx).await?;
    Ok(page.len() + booking_page.len())
}

/// One event's deliveries: one per subscription that `wants` it, with one
/// body built once, whatever the number of subscriptions.
fn fan_out<'w>(
    subscriptions: &'w [webhook::Webhook],
    wants: impl Fn(&webhook::Webhook) -> bool,
    payload: impl FnOnce() -> serde_json::Value,
    delivery: impl Fn(&webhook::Webhook, serde_json::Value) -> deliveries::NewDelivery,
) -> Vec<deliveries::NewDelivery> {
    let wanting: Vec<&'w webhook::Webhook> = subscriptions.iter().filter(|w| wants(w)).collect();
    if wanting.is_empty() {
        return Vec::new();
    }
    let payload = payload();
    wanting.into_iter().map(|w| delivery(w, payload.clone())).collect()
}

/// The notification intents of `events` for the notification endpoint:
/// one per notice the session's settings want and channel they name, with
/// the settings as they are now (SPEC §4.6).
async fn notices(
    app: &App,
    tx: &mut crate::store::Tx,
    endpoint: &webhook::Webhook,
    events: &[crate::domain::model::FeedEvent],
) -> Result<Vec<deliveries::NewDelivery>> {
    let mut ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event.session_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let configs = deliveries::configs(&mut **tx, &ids).await?;
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.event.occurred_at >= endpoint.created_at) {
        // A session purged meanwhile has no settings left: nothing to tell.
        let Some(config) = configs.get(&e.event.session_id) else {
            continue;
        };
        let n = &config.notifications;
        let Some(kind) = webhook::notice(&e.event, n) else {
            continue;
        };
        let wait = match kind {
            "queued" => match sessions::get(&mut **tx, e.event.session_id).await? {
                Some(s) => app.with_queue_info(tx, s).await?.queue.map(|q| q.estimated_wait),
                None => None,
            },
            _ => None,
        };
        for channel in webhook::channels(n) {
            out.push(deliveries::NewDelivery {
                webhook_id: endpoint.id,
                subject: deliveries::Subject::Session,
                subject_id: e.event.session_id,
                seq: e.event.seq,
                event_id: None,
                channel,
                event_type: e.event.event_type.as_str(),
                payload: webhook::notification(e, kind, channel, &n.recipients, wait),
            });
        }
    }
    Ok(out)
}

/// Claims the due deliveries and makes one attempt of each, at once;
/// returns how many it attempted.
pub async fn deliver_once(app: &App, client: &Clients) -> Result<usize> {
    let claimed = claim(app, BATCH).await?;
    let n = claimed.len();
    let attempts = claimed.into_iter().map(|d| attempt(app, client, d));
    for recorded in futures_util::future::join_all(attempts).await {
        recorded?;
    }
    Ok(n)
}

/// Claims up to `limit` due deliveries, committing the claim (the lease).
async fn claim(app: &App, limit: i64) -> Result<Vec<deliveries::Claimed>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut tx = deliveries::begin(&app.pool).await?;
    let rules = &app.rules.webhooks;
    let claimed = deliveries::claim(&mut tx, limit, rules.lease, rules.retry_period, uuid::Uuid::new_v4()).await?;
    crate::store::commit(tx).await?;
    Ok(claimed)
}

/// One attempt of a claimed delivery and, while they succeed, of the next
/// ones of its session that its record hands over.
async fn attempt(app: &App, client: &Clients, d: deliveries::Claimed) -> Result<()> {
    let mut next = Some(d);
    while let Some(d) = next {
        next = attempt_one(app, client, d).await?;
    }
    Ok(())
}

/// One POST of one delivery, and its record; the next delivery of its
/// session, claimed, when this one succeeded and one waits.
async fn attempt_one(app: &App, clients: &Clients, d: deliveries::Claimed) -> Result<Option<deliveries::Claimed>> {
    let id = d.id.to_string();
    let now = chrono::Utc::now();
    let body =
        serde_json::to_vec(&webhook::body(&d.url, &d.payload)).map_err(|e| crate::domain::Error::Internal(e.into()))?;
    let signature = webhook::sign(&d.secret, &id, now.timestamp(), &body)?;
    let sent = match clients.for_url(app, &d.url) {
        Ok(client) => client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.timestamp().to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(Some),
        Err(why) => {
            tracing::warn!(delivery_id = %id, webhook_id = %d.webhook_id, why, "webhook target refused; nothing sent");
            Err(None)
        }
    };
    let (status_code, error) = match sent {
        Ok(response) if response.status().is_success() => (response.status().as_u16(), None),
        Ok(response) => (
            response.status().as_u16(),
            Some(format!("the endpoint answered {}", response.status())),
        ),
        Err(err) => {
            if let Some(err) = err {
                tracing::info!(delivery_id = %id, error = %describe(&err), "webhook request failed");
            }
            // Callers see only that it failed: what kind of network failure
            // it was (refused, timed out, reset) would let them map the
            // networks this replica reaches.
            (0, Some(FAILED.to_owned()))
        }
    };
    let succeeded = error.is_none();
    let wait = webhook::backoff(u32::try_from(d.attempts).unwrap_or(0) + 1, rand::random::<f64>());
    let retry_at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
    let record = serde_json::json!({
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "status_code": status_code,
        "error": error.clone().unwrap_or_default(),
    });
    if let Some(error) = &error {
        tracing::info!(delivery_id = %id, webhook_id = %d.webhook_id, status_code, error, "webhook delivery failed; retrying later");
    }
    let rules = &app.rules.webhooks;
    deliveries::record_attempt(
        &app.pool,
        &d,
        record,
        succeeded,
        retry_at,
        rules.lease,
        rules.retry_period,
    )
    .await
}

/// What an attempt that got no HTTP answer records: nothing more.
pub const FAILED: &str = "the request failed";

/// A transport error for the log, without the URL (it may be a secret
/// Slack URL).
fn describe(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    }
}

/// The HTTP clients of the deliveries: one for subscriptions, held to
/// [`Targets`], and one for the operator's notification endpoint, which
/// may be anywhere. Each has a timeout per attempt, no redirects (a
/// subscription names its endpoint exactly), no proxy from the environment
/// (the connection goes where the target resolves), and rustls.
#[derive(Debug, Clone)]
pub struct Clients {
    subscriptions: reqwest::Client,
    operator: reqwest::Client,
    targets: Targets,
}

impl Clients {
    /// Fails only when reqwest cannot set up TLS; never falls back to a
    /// client without the rules.
    pub fn new(timeout: Duration, targets: Targets) -> Result<Clients, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("mentorship-webhooks/", env!("CARGO_PKG_VERSION")))
        };
        let subscriptions = match targets {
            Targets::Public => builder().dns_resolver(std::sync::Arc::new(crate::app::targets::PublicOnly)),
            Targets::Any => builder(),
        };
        Ok(Clients {
            subscriptions: subscriptions.build()?,
            operator: builder().build()?,
            targets,
        })
    }

    /// The client that sends to `url`; why nothing may be sent there, when
    /// its host is an address that is refused (a name is checked by the
    /// client's resolver, against every address it would connect to).
    fn for_url(&self, app: &App, url: &str) -> Result<&reqwest::Client, &'static str> {
        let operator = app.rules.webhooks.notifications.as_ref().is_some_and(|(n, _)| n == url);
        if operator {
            return Ok(&self.operator);
        }
        match self.targets.refuses_literal(url) {
            Some(why) => Err(why),
            None => Ok(&self.subscriptions),
        }
    }
}

/// Fans out everything committed so far; returns how many events.
pub async fn dispatch_all(app: &App) -> Result<usize> {
    let mut dispatched = 0;
    loop {
        let n = dispatch_once(app).await?;
        dispatched += n;
        // A full page of either feed means more may follow.
        if n < PAGE as usize {
            return Ok(dispatched);
        }
    }
}

/// One round, for tests: dispatch everything committed, then attempt
/// everything due (and wait for the attempts).
pub async fn step(app: &App, client: &Clients) -> Result<(usize, usize)> {
    let dispatched = dispatch_all(app).await?;
    Ok((dispatched, deliver_once(app, client).await?))
}

/// Attempts running at once on a replica.
const IN_FLIGHT: usize = 64;

/// Runs until `shutdown`: a round after each commit on this replica and
/// each finished attempt, and at least every [`IDLE`]. Each attempt runs in
/// a task of its own (at most [`IN_FLIGHT`]), so a slow endpoint holds up
/// only its own deliveries.
pub async fn run(app: App, shutdown: CancellationToken) {
    let client = match Clients::new(app.rules.webhooks.timeout, app.rules.webhooks.targets) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "no HTTP client for webhook deliveries: none will be sent");
            return;
        }
    };
    let mut changes = app.hub.subscribe_committed();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let finished = std::sync::Arc::new(tokio::sync::Notify::new());
    loop {
        let dispatched = dispatch_all(&app).await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "webhook dispatch failed; retrying");
            0
        });
        let free = in_flight.available_permits();
        let claimed = match claim(&app, free as i64).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, "claiming webhook deliveries failed; retrying");
                Vec::new()
            }
        };
        let full = free > 0 && claimed.len() == free;
        for d in claimed {
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                break;
            };
            let (app, client, finished) = (app.clone(), client.clone(), finished.clone());
            tokio::spawn(async move {
                if let Err(err) = attempt(&app, &client, d).await {
                    tracing::warn!(error = %err, "recording a webhook attempt failed; the lease will retry it");
                }
                drop(permit);
                finished.notify_one();
            });
        }
        if dispatched > 0 || full {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(IDLE) => {}
            _ = finished.notified() => {}
            _ = changes.recv() => {
                changes = changes.resubscribe();
                // The feed shows a commit once every older transaction has
                // ended: give it a moment.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
