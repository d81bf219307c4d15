//! The webhook delivery pipeline's statements: the dispatcher's cursor over
//! the feed, the deliveries it inserts, their claims, attempts and retries,
//! and the deliveries a subscription lists. The subscriptions themselves are
//! in `store::webhooks`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Tx;
use crate::domain::{Error, model::FeedPosition};

/// Session configs by id (the notification settings of a page's sessions).
pub async fn configs(
    db: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, crate::domain::config::SessionConfig>, Error> {
    let rows = sqlx::query!(
        r#"SELECT id, config AS "config: sqlx::types::Json<crate::domain::config::SessionConfig>"
           FROM sessions WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.config.0)).collect())
}

/// Where the dispatcher is in each feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub sessions: FeedPosition,
    pub bookings: FeedPosition,
}

/// The dispatcher's cursor, locked; `None` while another replica's
/// dispatcher holds it (it carries on from there).
pub async fn lock_cursor(tx: &mut Tx) -> Result<Option<Cursor>, Error> {
    let row = sqlx::query!(
        "SELECT txid, event_id, booking_txid, booking_event_id FROM webhook_cursor FOR UPDATE SKIP LOCKED"
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| Cursor {
        sessions: (r.txid, r.event_id),
        bookings: (r.booking_txid, r.booking_event_id),
    }))
}

pub async fn set_cursor(tx: &mut Tx, at: Cursor) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook_cursor SET txid = $1, event_id = $2, booking_txid = $3, booking_event_id = $4",
        at.sessions.0,
        at.sessions.1,
        at.bookings.0,
        at.bookings.1
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a delivery is about: a session's event, or a booking's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Session,
    Booking,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::Session => "SESSION",
            Subject::Booking => "BOOKING",
        }
    }
}

/// A delivery to make.
pub struct NewDelivery {
    pub webhook_id: Uuid,
    pub subject: Subject,
    /// The session's id, or the booking's.
    pub subject_id: Uuid,
    /// The event's seq in its session's or booking's log.
    pub seq: i64,
    /// A booking event's row (the claim's order check reads it).
    pub event_id: Option<i64>,
    /// A notification intent's channel; empty for a subscription.
    pub channel: &'static str,
    /// The session event's type, or the status a booking event moved to.
    pub event_type: &'static str,
    pub payload: serde_json::Value,
}

impl NewDelivery {
    /// The delivery's id, which receivers see as `webhook-id`: a function of
    /// what is delivered to whom (subscription, subject, seq, channel), so a
    /// delivery written again, after a failover lost the first row (the
    /// pipeline's commits do not wait for the standby), keeps its id.
    pub fn id(&self) -> Uuid {
        let name = format!(
            "{}/{}/{}/{}",
            self.subject.as_str(),
            self.subject_id,
            self.seq,
            self.channel
        );
        Uuid::new_v5(&self.webhook_id, name.as_bytes())
    }
}

/// Inserts deliveries (one already made for the same subscription, event
/// and channel is left alone). A pair of subscription and session (or
/// booking) has its lowest open delivery PENDING, due now, and the ones
/// behind it WAITING until it ends. The feed is in transaction order, which
/// for two events of one session can differ from seq order, so a new
/// delivery below every open one of its pair is PENDING too (the claim
/// sends the lower first).
///
/// Runs in the dispatcher's transaction, which locks each pair's lowest
/// open delivery, waiting for an attempt being recorded: so either the
/// record commits first, and this sees what it ended and promoted, or this
/// commits first, and the record's promotion sees what this inserted.
pub async fn insert_deliveries(tx: &mut Tx, new: &[NewDelivery]) -> Result<(), Error> {
    if new.is_empty() {
        return Ok(());
    }
    let mut new: Vec<&NewDelivery> = new.iter().collect();
    new.sort_by_key(|d| (d.webhook_id, d.subject_id, d.seq, d.channel));
    let webhooks: Vec<Uuid> = new.iter().map(|d| d.webhook_id).collect();
    let subjects: Vec<Uuid> = new.iter().map(|d| d.subject_id).collect();
    // The subscriptions first (the foreign key's lock, taken anyway by the
    // insert), so a DeleteWebhook, which locks its subscription and then
    // its deliveries, never deadlocks with this.
    sqlx::query!(
        "SELECT 1 AS one FROM webhooks WHERE id = ANY($1) ORDER BY id FOR KEY SHARE",
        &webhooks
    )
    .fetch_all(&mut **tx)
    .await?;
    // Per pair with open deliveries, the lowest, locked (pairs in order).
    let open = sqlx::query!(
        r#"SELECT p.webhook_id AS "webhook_id!", p.session_id AS "session_id!", lowest.seq AS "lowest!"
           FROM (SELECT DISTINCT * FROM unnest($1::uuid[], $2::uuid[]) AS p(webhook_id, session_id)
                 ORDER BY 1, 2) p
           CROSS JOIN LATERAL (
               SELECT d.seq FROM webhook_deliveries d
               WHERE d.webhook_id = p.webhook_id AND d.session_id = p.session_id
                 AND d.status IN ('WAITING', 'PENDING')
               ORDER BY d.seq LIMIT 1
               FOR UPDATE
           ) lowest"#,
        &webhooks,
        &subjects
    )
    .fetch_all(&mut **tx)
    .await?;
    let lowest_open: std::collections::HashMap<(Uuid, Uuid), i64> = open
        .into_iter()
        .map(|r| ((r.webhook_id, r.session_id), r.lowest))
        .collect();
    let mut headed = std::collections::HashSet::new();
    let statuses: Vec<String> = new
        .iter()
        .map(|d| {
            // The lowest new one of a pair goes now, unless an open one of
            // the pair comes before it; the rest wait.
            let pair = (d.webhook_id, d.subject_id);
            let first = headed.insert(pair) && lowest_open.get(&pair).is_none_or(|&lowest| d.seq < lowest);
            if first { "PENDING" } else { "WAITING" }.to_owned()
        })
        .collect();
    let ids: Vec<Uuid> = new.iter().map(|d| d.id()).collect();
    let seqs: Vec<i64> = new.iter().map(|d| d.seq).collect();
    let channels: Vec<String> = new.iter().map(|d| d.channel.to_owned()).collect();
    let types: Vec<String> = new.iter().map(|d| d.event_type.to_owned()).collect();
    let payloads: Vec<serde_json::Value> = new.iter().map(|d| d.payload.clone()).collect();
    let kinds: Vec<String> = new.iter().map(|d| d.subject.as_str().to_owned()).collect();
    let event_ids: Vec<Option<i64>> = new.iter().map(|d| d.event_id).collect();
    sqlx::query!(
        "INSERT INTO webhook_deliveries (id, webhook_id, session_id, seq, event_type, payload, channel, status,
                                         subject, event_id, next_attempt_at)
         SELECT d.*, CASE WHEN d.status = 'PENDING' THEN now() END
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], $6::jsonb[], $7::text[],
                     $8::text[], $9::text[], $10::bigint[])
              AS d(id, webhook_id, session_id, seq, event_type, payload, channel, status, subject, event_id)
         ON CONFLICT (webhook_id, session_id, seq, channel) DO NOTHING",
        &ids,
        &webhooks,
        &subjects,
        &seqs,
        &types,
        &payloads,
        &channels,
        &statuses,
        &kinds,
        &event_ids as &[Option<i64>]
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Opens a transaction of the webhook pipeline. Its commits do not wait
/// for the WAL flush (`synchronous_commit = off`), except a claim's (see
/// `claim`): what a crash or a failover can lose of
/// them is a cursor move (the events are dispatched again, and the unique
/// key keeps one delivery each), a claim (the delivery is claimed again) or
/// a record (the delivery is sent again, with the same `webhook-id`), all
/// within at least once. Its lock waits may last 5 s, not the API's 1 s:
/// the dispatcher and an attempt's record wait for each other on a pair's
/// deliveries, and a record given up would send its delivery again.
pub async fn begin(pool: &sqlx::PgPool) -> Result<Tx, Error> {
    let mut tx = super::begin(pool).await?;
    sqlx::query!(
        "SELECT set_config('synchronous_commit', 'off', true) AS synchronous_commit,
                set_config('lock_timeout', '5s', true) AS lock_timeout"
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(tx)
}

/// Attempts of one subscription in flight at once, across the replicas: a
/// slow endpoint takes at most this many of a replica's attempt slots.
pub const PER_SUBSCRIPTION: i64 = 8;

/// A delivery claimed for one attempt.
pub struct Claimed {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub secret: String,
    pub payload: serde_json::Value,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The claim this attempt is made under.
    pub token: Uuid,
}

/// Claims up to `limit` due deliveries for one attempt each, under the
/// claim `token`. Mostly only the lowest of each subscription and session
/// pair is PENDING (the rest wait, WAITING), so the scan sees about one row
/// per pair. A delivery is sent only once every earlier one of its pair has
/// ended and every earlier event of its session (or booking) has been
/// dispatched (the feed is in transaction order, which for two events of
/// one session can differ from seq order); `claim_one` checks the same.
/// RetryDelivery's go regardless. At most [`PER_SUBSCRIPTION`] attempts of a subscription are in flight. A claimed
/// delivery is not due again until `lease` has passed, so a replica that
/// dies mid-attempt leaves it to another after the lease. The first claim
/// starts the retry period.
pub async fn claim(
    tx: &mut Tx,
    limit: i64,
    lease: std::time::Duration,
    retry_period: chrono::Duration,
    token: Uuid,
) -> Result<Vec<Claimed>, Error> {
    // Sent as soon as this commits: unlike the rest of the pipeline, the
    // claim's commit waits for the synchronous standby, so nothing is sent
    // (the event, the delivery row) that a failover can lose.
    sqlx::query("SELECT set_config('synchronous_commit', 'on', true)")
        .execute(&mut **tx)
        .await?;
    Ok(sqlx::query_as!(
        Claimed,
        r#"WITH busy AS (
               SELECT webhook_id, count(*) AS n FROM webhook_deliveries
               WHERE status = 'PENDING' AND claim IS NOT NULL AND next_attempt_at > now()
               GROUP BY webhook_id
           ), candidates AS (
               SELECT d.id, row_number() OVER (PARTITION BY d.webhook_id ORDER BY d.next_attempt_at, d.id)
                            + coalesce(b.n, 0) AS load
               FROM webhook_deliveries d
               JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
               LEFT JOIN busy b ON b.webhook_id = d.webhook_id
               WHERE d.status = 'PENDING' AND d.next_attempt_at <= now()
                 AND (d.manual OR (
                     -- Ready: as in claim_one.
                     NOT EXISTS (
                         SELECT 1 FROM webhook_deliveries e
                         WHERE e.webhook_id = d.webhook_id AND e.session_id = d.session_id
                           AND e.status IN ('WAITING', 'PENDING') AND NOT e.manual AND e.seq < d.seq)
                     AND NOT EXISTS (
                         SELECT 1 FROM session_events ev, webhook_cursor c
                         WHERE d.subject = 'SESSION' AND ev.session_id = d.session_id AND ev.seq < d.seq
                           AND (ev.txid, ev.id) > (c.txid, c.event_id))
                     AND NOT EXISTS (
                         SELECT 1 FROM booking_events ev, webhook_cursor c
                         WHERE d.subject = 'BOOKING' AND ev.booking_id = d.session_id AND ev.id < d.event_id
                           AND (ev.txid, ev.id) > (c.booking_txid, c.booking_event_id))))
           ), due AS (
               SELECT d.id FROM webhook_deliveries d JOIN candidates c ON c.id = d.id
               WHERE c.load <= $3 AND d.status = 'PENDING' AND d.next_attempt_at <= now()
               ORDER BY d.next_attempt_at LIMIT $1
               FOR UPDATE OF d SKIP LOCKED
           )
           UPDATE webhook_deliveries d SET
               next_attempt_at = now() + make_interval(secs => $2),
               claim = $4,
               give_up_at = coalesce(d.give_up_at, now() + make_interval(secs => $5))
           FROM due, webhooks w
           WHERE d.id = due.id AND w.id = d.webhook_id
           RETURNING d.id, d.webhook_id, w.url, w.secret, d.payload,
                     jsonb_array_length(d.attempts) AS "attempts!", $4::uuid AS "token!""#,
        limit,
        lease.as_secs_f64(),
        PER_SUBSCRIPTION,
        token,
        retry_period.num_milliseconds() as f64 / 1000.0
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Records an attempt made under the claim `token` (nothing, when the
/// delivery has been claimed again since, or retried): SUCCEEDED, or
/// PENDING again at `retry_at`, or FAILED when `retry_at` is past the retry
/// period. A delivery that ends promotes the next one of its subscription
/// and session, in the same transaction, and returns it claimed under the
/// same token when the attempt succeeded (so the same task sends it at
/// once: a session's deliveries follow each other without a round trip
/// through the loop).
pub async fn record_attempt(
    pool: &sqlx::PgPool,
    d: &Claimed,
    attempt: serde_json::Value,
    succeeded: bool,
    retry_at: DateTime<Utc>,
    lease: std::time::Duration,
    retry_period: chrono::Duration,
) -> Result<Option<Claimed>, Error> {
    let mut tx = begin(pool).await?;
    let ended = sqlx::query!(
        "UPDATE webhook_deliveries SET
             attempts = attempts || jsonb_build_array($2::jsonb),
             claim = NULL,
             manual = manual AND NOT ($3 OR $4 > give_up_at),
             status = CASE WHEN $3 THEN 'SUCCEEDED' WHEN $4 > give_up_at THEN 'FAILED' ELSE 'PENDING' END,
             next_attempt_at = CASE WHEN $3 OR $4 > give_up_at THEN NULL ELSE $4 END
         WHERE id = $1 AND claim = $5 AND status = 'PENDING'
         RETURNING webhook_id, session_id, status",
        d.id,
        attempt,
        succeeded,
        retry_at,
        d.token
    )
    .fetch_optional(&mut *tx)
    .await?;
    let mut next = None;
    if let Some(ended) = ended.filter(|e| e.status != "PENDING")
        && let Some(promoted) = promote(&mut tx, ended.webhook_id, ended.session_id).await?
        && succeeded
    {
        next = claim_one(&mut tx, promoted, lease, retry_period, d.token).await?;
    }
    if next.is_some() {
        // It is sent as soon as this commits: as `claim`'s, this commit
        // waits for the synchronous standby, so the event it delivers (and
        // the delivery row) cannot be lost to a failover once sent.
        sqlx::query("SELECT set_config('synchronous_commit', 'on', true)")
            .execute(&mut *tx)
            .await?;
    }
    super::commit(tx).await?;
    Ok(next)
}

/// Makes the lowest WAITING delivery of a pair PENDING, due now; its id.
/// Always, even while a lower one is still PENDING: the claim's checks
/// (fresh at each claim) keep the order, while a check here, against this
/// statement's snapshot, could miss an end committing at the same moment
/// and leave the pair WAITING for good.
async fn promote(tx: &mut Tx, webhook_id: Uuid, subject_id: Uuid) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = now()
         WHERE id = (SELECT id FROM webhook_deliveries
                     WHERE webhook_id = $1 AND session_id = $2 AND status = 'WAITING'
                     ORDER BY seq, channel LIMIT 1 FOR UPDATE)
         RETURNING id",
        webhook_id,
        subject_id
    )
    .fetch_optional(&mut **tx)
    .await?)
}

/// Claims the delivery `id` (just promoted) under `token`, when its
/// subscription is enabled and it is ready to go (the claim's checks: an
/// earlier event of its session may not have been dispatched yet, and then
/// it stays PENDING for a later claim).
async fn claim_one(
    tx: &mut Tx,
    id: Uuid,
    lease: std::time::Duration,
    retry_period: chrono::Duration,
    token: Uuid,
) -> Result<Option<Claimed>, Error> {
    Ok(sqlx::query_as!(
        Claimed,
        r#"UPDATE webhook_deliveries d SET
               next_attempt_at = now() + make_interval(secs => $2),
               claim = $3,
               give_up_at = coalesce(d.give_up_at, now() + make_interval(secs => $4))
           FROM webhooks w
           WHERE d.id = $1 AND w.id = d.webhook_id AND w.enabled AND d.status = 'PENDING'
             -- Ready: as in claim.
             AND NOT EXISTS (
                 SELECT 1 FROM webhook_deliveries e
                 WHERE e.webhook_id = d.webhook_id AND e.session_id = d.session_id
                   AND e.status IN ('WAITING', 'PENDING') AND NOT e.manual AND e.seq < d.seq)
             AND NOT EXISTS (
                 SELECT 1 FROM session_events ev, webhook_cursor c
                 WHERE d.subject = 'SESSION' AND ev.session_id = d.session_id AND ev.seq < d.seq
                   AND (ev.txid, ev.id) > (c.txid, c.event_id))
             AND NOT EXISTS (
                 SELECT 1 FROM booking_events ev, webhook_cursor c
                 WHERE d.subject = 'BOOKING' AND ev.booking_id = d.session_id AND ev.id < d.event_id
                   AND (ev.txid, ev.id) > (c.booking_txid, c.booking_event_id))
           RETURNING d.id, d.webhook_id, w.url, w.secret, d.payload,
                     jsonb_array_length(d.attempts) AS "attempts!", $3::uuid AS "token!""#,
        id,
        lease.as_secs_f64(),
        token,
        retry_period.num_milliseconds() as f64 / 1000.0
    )
    .fetch_optional(&mut **tx)
    .await?)
}

/// A delivery as listed.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// `SESSION` or `BOOKING`: whose id `subject_id` is.
    pub subject: String,
    pub subject_id: Uuid,
    pub seq: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: serde_json::Value,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A page of a subscription's deliveries, newest first.
pub async fn deliveries(
    db: impl sqlx::PgExecutor<'_>,
    webhook_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Delivery>, Error> {
    let (at, id) = after.unzip();
    Ok(sqlx::query_as!(
        Delivery,
        "SELECT id, webhook_id, subject, session_id AS subject_id, seq, event_type, status, attempts, next_attempt_at,
                created_at
         FROM webhook_deliveries
         WHERE webhook_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4",
        webhook_id,
        at,
        id,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// RetryDelivery: makes the delivery due now, whatever its state, sent
/// regardless of order. Returns it and whether it goes out of order (an
/// earlier delivery of its session is still pending, or a later one was
/// already sent); `None` when there is no such delivery.
pub async fn retry(tx: &mut Tx, id: Uuid, retry_period: chrono::Duration) -> Result<Option<(Delivery, bool)>, Error> {
    let Some(d) = sqlx::query_as!(
        Delivery,
        "UPDATE webhook_deliveries SET status = 'PENDING', manual = true, next_attempt_at = now(), claim = NULL,
                give_up_at = now() + make_interval(secs => $2)
         WHERE id = $1
         RETURNING id, webhook_id, subject, session_id AS subject_id, seq, event_type, status, attempts,
                   next_attempt_at, created_at",
        id,
        retry_period.num_milliseconds() as f64 / 1000.0
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let out_of_order = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM webhook_deliveries
               WHERE webhook_id = $1 AND session_id = $2 AND id <> $4
                 AND ((seq < $3 AND status IN ('WAITING', 'PENDING')) OR (seq > $3 AND status = 'SUCCEEDED'))
           ) AS "out_of_order!""#,
        d.webhook_id,
        d.subject_id,
        d.seq,
        d.id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some((d, out_of_order)))
}
