//! WebhookService's use cases (coordinators and services: the RPC table
//! admits no one else). The deliveries themselves are `jobs::webhooks`.

use uuid::Uuid;

use super::{App, page};
use crate::domain::{
    Error, Resource, Result,
    query::Page,
    webhook::{self, Webhook},
};
use crate::store::{deliveries, unit::Unit, webhooks as store};

/// CreateWebhook and UpdateWebhook's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookFields {
    pub url: String,
    pub event_types: Vec<crate::domain::model::EventType>,
    pub booking_event_types: Vec<crate::domain::booking::BookingStatus>,
    pub booking_event_kinds: Vec<crate::domain::booking::BookingEventKind>,
    pub filter: webhook::Filter,
    pub enabled: bool,
}

/// UpdateWebhook: the fields named by `paths`, taken from `patch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUpdate {
    pub id: Uuid,
    pub patch: WebhookFields,
    pub paths: Vec<String>,
}

/// The paths UpdateWebhook accepts.
pub(crate) const UPDATABLE: [&str; 6] = [
    "url",
    "event_types",
    "booking_event_types",
    "booking_event_kinds",
    "filter",
    "enabled",
];

impl App {
    /// A new subscription with a new signing secret (returned with it).
    pub async fn create_webhook(&self, unit: &mut Unit, fields: WebhookFields) -> Result<Webhook> {
        self.rules.webhooks.targets.check("webhook.url", &fields.url).await?;
        let now = super::now();
        let w = Webhook {
            id: Uuid::now_v7(),
            url: fields.url,
            event_types: fields.event_types,
            booking_event_types: fields.booking_event_types,
            booking_event_kinds: fields.booking_event_kinds,
            filter: fields.filter,
            enabled: fields.enabled,
            secret: webhook::new_secret(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        store::insert(unit.tx(), &w).await
    }

    pub async fn get_webhook(&self, id: Uuid) -> Result<Webhook> {
        store::get(&mut *self.connection().await?, id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Webhook, id))
    }

    pub async fn list_webhooks(&self, p: Page) -> Result<(Vec<Webhook>, String)> {
        let filter = "webhooks";
        page::keyset(
            &filter,
            &p,
            |w: &Webhook| (w.created_at, w.id),
            async |after, limit| store::list(&mut *self.connection().await?, after, limit).await,
        )
        .await
    }

    pub async fn update_webhook(&self, unit: &mut Unit, u: WebhookUpdate) -> Result<Webhook> {
        if u.paths.iter().any(|p| p == "url") {
            self.rules.webhooks.targets.check("webhook.url", &u.patch.url).await?;
        }
        let before = locked(unit, u.id).await?;
        let mut w = before.clone();
        for path in &u.paths {
            match path.as_str() {
                "url" => w.url = u.patch.url.clone(),
                "event_types" => w.event_types = u.patch.event_types.clone(),
                "booking_event_types" => w.booking_event_types = u.patch.booking_event_types.clone(),
                "booking_event_kinds" => w.booking_event_kinds = u.patch.booking_event_kinds.clone(),
                "filter" => w.filter = u.patch.filter,
                "enabled" => w.enabled = u.patch.enabled,
                _ => {}
            }
        }
        if w == before {
            return Ok(before);
        }
        store::update(unit.tx(), &w).await
    }

    pub async fn delete_webhook(&self, unit: &mut Unit, id: Uuid) -> Result<()> {
        if !store::delete(unit.tx(), id).await? {
            return Err(Error::not_found(Resource::Webhook, id));
        }
        Ok(())
    }

    /// A new signing secret; the old one signs nothing from the commit on.
    pub async fn rotate_webhook_secret(&self, unit: &mut Unit, id: Uuid) -> Result<Webhook> {
        let mut w = locked(unit, id).await?;
        w.secret = webhook::new_secret();
        store::update(unit.tx(), &w).await
    }

    pub async fn list_deliveries(&self, webhook_id: Uuid, p: Page) -> Result<(Vec<deliveries::Delivery>, String)> {
        self.get_webhook(webhook_id).await?;
        let filter = ("deliveries", webhook_id);
        page::keyset(
            &filter,
            &p,
            |d: &deliveries::Delivery| (d.created_at, d.id),
            async |after, limit| deliveries::deliveries(&mut *self.connection().await?, webhook_id, after, limit).await,
        )
        .await
    }

    /// RetryDelivery: due now, sent whatever the order; whether it goes out
    /// of order.
    pub async fn retry_delivery(&self, unit: &mut Unit, id: Uuid) -> Result<(deliveries::Delivery, bool)> {
        deliveries::retry(unit.tx(), id, self.rules.webhooks.retry_period)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Delivery, id))
    }
}

async fn locked(unit: &mut Unit, id: Uuid) -> Result<Webhook> {
    store::lock(unit.tx(), id)
        .await?
        .ok_or_else(|| Error::not_found(Resource::Webhook, id))
}
