//! Webhook subscriptions, their deliveries, and the dispatcher's cursor.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Tx, corrupt};
use crate::domain::{
    Error,
    model::EventType,
    webhook::{Filter, Webhook},
};

struct WebhookRow {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    booking_event_types: Vec<String>,
    booking_event_kinds: Vec<String>,
    mentor_id: Option<Uuid>,
    mentee_id: Option<Uuid>,
    listing_id: Option<Uuid>,
    enabled: bool,
    secret: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<WebhookRow> for Webhook {
    type Error = Error;
    fn try_from(r: WebhookRow) -> Result<Webhook, Error> {
        let event_types = r
            .event_types
            .iter()
            .map(|t| EventType::parse(t).ok_or_else(|| corrupt(format!("webhook event type {t:?}"))))
            .collect::<Result<_, _>>()?;
        let booking_event_types = r
            .booking_event_types
            .iter()
            .map(|t| t.parse().map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let booking_event_kinds = r
            .booking_event_kinds
            .iter()
            .map(|t| t.parse().map_err(corrupt))
            .collect::<Result<_, _>>()?;
        Ok(Webhook {
            id: r.id,
            url: r.url,
            event_types,
            booking_event_types,
            booking_event_kinds,
            filter: Filter {
                mentor_id: r.mentor_id,
                mentee_id: r.mentee_id,
                listing_id: r.listing_id,
            },
            enabled: r.enabled,
            secret: r.secret,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn type_names(w: &Webhook) -> Vec<String> {
    w.event_types.iter().map(|t| t.as_str().to_owned()).collect()
}

fn booking_type_names(w: &Webhook) -> Vec<String> {
    w.booking_event_types.iter().map(|t| t.as_str().to_owned()).collect()
}

fn booking_kind_names(w: &Webhook) -> Vec<String> {
    w.booking_event_kinds.iter().map(|t| t.as_str().to_owned()).collect()
}

/// Stores a new subscription.
pub(crate) async fn insert(tx: &mut Tx, w: &Webhook) -> Result<Webhook, Error> {
    let row = sqlx::query_as!(
        WebhookRow,
        "INSERT INTO webhooks (id, url, event_types, mentor_id, mentee_id, listing_id, enabled, secret,
                               booking_event_types, booking_event_kinds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret,
                   version,
                   created_at, updated_at",
        w.id,
        w.url,
        &type_names(w),
        w.filter.mentor_id,
        w.filter.mentee_id,
        w.filter.listing_id,
        w.enabled,
        w.secret,
        &booking_type_names(w),
        &booking_kind_names(w)
    )
    .fetch_one(&mut **tx)
    .await?;
    row.try_into()
}

/// Writes a subscription's fields and bumps its version.
pub(crate) async fn update(tx: &mut Tx, w: &Webhook) -> Result<Webhook, Error> {
    let row = sqlx::query_as!(
        WebhookRow,
        "UPDATE webhooks SET url = $2, event_types = $3, mentor_id = $4, mentee_id = $5, listing_id = $6,
                enabled = $7, secret = $8, booking_event_types = $9, booking_event_kinds = $10,
                version = version + 1, updated_at = now()
         WHERE id = $1
         RETURNING id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret,
                   version,
                   created_at, updated_at",
        w.id,
        w.url,
        &type_names(w),
        w.filter.mentor_id,
        w.filter.mentee_id,
        w.filter.listing_id,
        w.enabled,
        w.secret,
        &booking_type_names(w),
        &booking_kind_names(w)
    )
    .fetch_one(&mut **tx)
    .await?;
    row.try_into()
}

/// A subscription, locked until the transaction ends.
pub(crate) async fn lock(tx: &mut Tx, id: Uuid) -> Result<Option<Webhook>, Error> {
    sqlx::query_as!(
        WebhookRow,
        "SELECT id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret, version,
                created_at, updated_at
         FROM webhooks WHERE id = $1 AND kind = 'SUBSCRIPTION' FOR UPDATE",
        id
    )
    .fetch_optional(&mut **tx)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

pub(crate) async fn get(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<Webhook>, Error> {
    sqlx::query_as!(
        WebhookRow,
        "SELECT id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret, version,
                created_at, updated_at
         FROM webhooks WHERE id = $1 AND kind = 'SUBSCRIPTION'",
        id
    )
    .fetch_optional(db)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// A page of subscriptions, newest first, after the keyset `after`.
pub(crate) async fn list(
    db: impl sqlx::PgExecutor<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Webhook>, Error> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        WebhookRow,
        "SELECT id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret, version,
                created_at, updated_at
         FROM webhooks
         WHERE kind = 'SUBSCRIPTION' AND ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
         ORDER BY created_at DESC, id DESC LIMIT $3",
        at,
        id,
        limit
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(TryInto::try_into)
    .collect()
}

/// Every enabled subscription (the dispatcher matches events against them).
pub(crate) async fn enabled(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<Webhook>, Error> {
    sqlx::query_as!(
        WebhookRow,
        "SELECT id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret, version,
                created_at, updated_at
         FROM webhooks WHERE enabled AND kind = 'SUBSCRIPTION'"
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(TryInto::try_into)
    .collect()
}

/// Deletes a subscription and its deliveries; whether there was one.
pub(crate) async fn delete(tx: &mut Tx, id: Uuid) -> Result<bool, Error> {
    let deleted = sqlx::query!("DELETE FROM webhooks WHERE id = $1 AND kind = 'SUBSCRIPTION'", id)
        .execute(&mut **tx)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// The notification endpoint, when one is configured and enabled.
pub(crate) async fn notification_endpoint(db: impl sqlx::PgExecutor<'_>) -> Result<Option<Webhook>, Error> {
    sqlx::query_as!(
        WebhookRow,
        "SELECT id, url, event_types, booking_event_types, booking_event_kinds, mentor_id, mentee_id, listing_id, enabled, secret, version,
                created_at, updated_at
         FROM webhooks WHERE kind = 'NOTIFICATIONS' AND enabled"
    )
    .fetch_optional(db)
    .await?
    .map(TryInto::try_into)
    .transpose()
}

/// Makes the notification endpoint what the config says: `(url, secret)`,
/// or disabled when none is configured (its pending intents wait).
pub(crate) async fn set_notification_endpoint(
    pool: &sqlx::PgPool,
    endpoint: Option<(&str, &str)>,
) -> Result<(), Error> {
    match endpoint {
        Some((url, secret)) => {
            sqlx::query!(
                "INSERT INTO webhooks (id, url, enabled, secret, kind) VALUES ($1, $2, true, $3, 'NOTIFICATIONS')
                 ON CONFLICT (kind) WHERE kind = 'NOTIFICATIONS'
                 DO UPDATE SET url = $2, secret = $3, enabled = true, updated_at = now()
                 WHERE webhooks.url <> $2 OR webhooks.secret <> $3 OR NOT webhooks.enabled",
                Uuid::now_v7(),
                url,
                secret
            )
            .execute(pool)
            .await?;
        }
        None => {
            sqlx::query!("UPDATE webhooks SET enabled = false WHERE kind = 'NOTIFICATIONS' AND enabled")
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}
