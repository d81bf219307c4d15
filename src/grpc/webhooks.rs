//! WebhookService: handlers of a few lines each, and the parser of each request.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Api, Parse, convert, mutating, pb};
use crate::app::webhooks::{UPDATABLE, WebhookFields, WebhookUpdate};
use crate::domain::{
    Error, Result, Violations,
    booking::{BookingEventKind, BookingStatus},
    input,
    model::EventType,
    query::Page,
    webhook::{self, Filter, Webhook},
};
use crate::store::deliveries::Delivery;

mutating!(
    pb::CreateWebhookRequest,
    pb::UpdateWebhookRequest,
    pb::DeleteWebhookRequest,
    pb::RotateWebhookSecretRequest,
    pb::RetryDeliveryRequest,
);

/// Most event types a subscription names.
const MAX_EVENT_TYPES: usize = 32;

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for Api {
    async fn create_webhook(
        &self,
        req: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        self.mutate_remembering(
            req,
            async |app, unit, _who, fields| {
                let w = app.create_webhook(unit, fields).await?;
                Ok(pb::CreateWebhookResponse {
                    signing_secret: w.secret.clone(),
                    webhook: Some(shown(&w)),
                })
            },
            without_secret,
        )
        .await
    }

    async fn get_webhook(
        &self,
        req: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::GetWebhookResponse>, Status> {
        self.read(req, async |app, _who, id| {
            Ok(pb::GetWebhookResponse {
                webhook: Some(shown(&app.get_webhook(id).await?)),
            })
        })
        .await
    }

    async fn list_webhooks(
        &self,
        req: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        self.read(req, async |app, _who, page| {
            let (webhooks, next_page_token) = app.list_webhooks(page).await?;
            Ok(pb::ListWebhooksResponse {
                webhooks: webhooks.iter().map(shown).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn update_webhook(
        &self,
        req: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::UpdateWebhookResponse>, Status> {
        self.mutate(req, async |app, unit, _who, update| {
            Ok(pb::UpdateWebhookResponse {
                webhook: Some(shown(&app.update_webhook(unit, update).await?)),
            })
        })
        .await
    }

    async fn delete_webhook(
        &self,
        req: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        self.mutate(req, async |app, unit, _who, id| {
            app.delete_webhook(unit, id).await?;
            Ok(pb::DeleteWebhookResponse {})
        })
        .await
    }

    async fn rotate_webhook_secret(
        &self,
        req: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        self.mutate_remembering(
            req,
            async |app, unit, _who, id| {
                let w = app.rotate_webhook_secret(unit, id).await?;
                Ok(pb::RotateWebhookSecretResponse {
                    signing_secret: w.secret.clone(),
                    webhook: Some(shown(&w)),
                })
            },
            without_secret,
        )
        .await
    }

    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        self.read(req, async |app, _who, (id, page)| {
            let (deliveries, next_page_token) = app.list_deliveries(id, page).await?;
            Ok(pb::ListDeliveriesResponse {
                deliveries: deliveries.iter().map(delivery).collect::<Result<_>>()?,
                next_page_token,
            })
        })
        .await
    }

    async fn retry_delivery(
        &self,
        req: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::RetryDeliveryResponse>, Status> {
        self.mutate(req, async |app, unit, _who, id| {
            let (d, out_of_order) = app.retry_delivery(unit, id).await?;
            Ok(pb::RetryDeliveryResponse {
                delivery: Some(delivery(&d)?),
                out_of_order,
            })
        })
        .await
    }
}

/// A response that shows a signing secret once.
trait ShowsSecret: prost::Message + Clone {
    fn secret(&mut self) -> &mut String;
}

impl ShowsSecret for pb::CreateWebhookResponse {
    fn secret(&mut self) -> &mut String {
        &mut self.signing_secret
    }
}

impl ShowsSecret for pb::RotateWebhookSecretResponse {
    fn secret(&mut self) -> &mut String {
        &mut self.signing_secret
    }
}

/// The response remembered for a retry with the same request_id: without
/// the secret (a retry gets the subscription, not the secret).
fn without_secret<R: ShowsSecret>(response: &R) -> Vec<u8> {
    let mut remembered = response.clone();
    remembered.secret().clear();
    remembered.encode_to_vec()
}

/// A subscription as shown: never its secret, and a Slack URL's path hidden.
fn shown(w: &Webhook) -> pb::Webhook {
    let id = |v: Option<Uuid>| v.map(|v| v.to_string()).unwrap_or_default();
    pb::Webhook {
        id: w.id.to_string(),
        url: w.shown_url(),
        event_types: w.event_types.iter().map(|t| event_type(*t) as i32).collect(),
        booking_event_types: w
            .booking_event_types
            .iter()
            .map(|s| convert::booking_status(*s) as i32)
            .collect(),
        booking_event_kinds: w
            .booking_event_kinds
            .iter()
            .map(|k| convert::booking_event_kind(*k) as i32)
            .collect(),
        filter: Some(pb::WebhookFilter {
            mentor_id: id(w.filter.mentor_id),
            mentee_id: id(w.filter.mentee_id),
            listing_id: id(w.filter.listing_id),
        }),
        enabled: Some(w.enabled),
        create_time: Some(convert::timestamp(w.created_at)),
        update_time: Some(convert::timestamp(w.updated_at)),
        etag: crate::domain::model::etag(w.version),
    }
}

fn event_type(t: EventType) -> pb::SessionEventType {
    pb::SessionEventType::from_str_name(&format!("SESSION_EVENT_TYPE_{}", t.as_str()))
        .unwrap_or(pb::SessionEventType::Unspecified)
}

fn delivery(d: &Delivery) -> Result<pb::Delivery> {
    let status = match d.status.as_str() {
        "PENDING" => pb::DeliveryStatus::Pending,
        "SUCCEEDED" => pb::DeliveryStatus::Succeeded,
        "FAILED" => pb::DeliveryStatus::Failed,
        "WAITING" => pb::DeliveryStatus::Waiting,
        other => return Err(Error::Internal(anyhow::anyhow!("stored delivery status {other:?}"))),
    };
    let attempts = d
        .attempts
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|a| pb::DeliveryAttempt {
            time: a["at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| convert::timestamp(t.with_timezone(&chrono::Utc))),
            status_code: a["status_code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(0),
            error: a["error"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    let mut shown = pb::Delivery {
        id: d.id.to_string(),
        webhook_id: d.webhook_id.to_string(),
        seq: d.seq,
        status: status as i32,
        attempts,
        next_attempt_time: d.next_attempt_at.map(convert::timestamp),
        create_time: Some(convert::timestamp(d.created_at)),
        ..Default::default()
    };
    match d.subject.as_str() {
        "SESSION" => {
            shown.session_id = d.subject_id.to_string();
            shown.event_type =
                EventType::parse(&d.event_type).map_or(pb::SessionEventType::Unspecified, event_type) as i32;
        }
        "BOOKING" => {
            shown.booking_id = d.subject_id.to_string();
            let status: BookingStatus = d
                .event_type
                .parse()
                .map_err(|_| Error::Internal(anyhow::anyhow!("stored booking delivery type {:?}", d.event_type)))?;
            shown.booking_status = convert::booking_status(status) as i32;
        }
        other => return Err(Error::Internal(anyhow::anyhow!("stored delivery subject {other:?}"))),
    }
    Ok(shown)
}

/// The fields of a subscription in a request, each checked; `None` where a
/// violation was recorded in `v`.
fn fields(w: &pb::Webhook, v: &mut Violations, only: Option<&[String]>) -> Option<WebhookFields> {
    let wanted = |path: &str| only.is_none_or(|paths| paths.iter().any(|p| p == path));
    let url = if wanted("url") {
        v.check(webhook::check_url("webhook.url", &w.url))
    } else {
        Some(String::new())
    };
    let event_types = if wanted("event_types") {
        v.check(input::at_most(
            "webhook.event_types",
            w.event_types.len(),
            MAX_EVENT_TYPES,
        ))
        .and_then(|()| {
            let mut types = Vec::new();
            for raw in &w.event_types {
                let t = pb::SessionEventType::try_from(*raw).ok().and_then(|t| {
                    t.as_str_name()
                        .strip_prefix("SESSION_EVENT_TYPE_")
                        .and_then(EventType::parse)
                });
                match t {
                    Some(t) if !types.contains(&t) => types.push(t),
                    Some(_) => {}
                    None => {
                        v.add("webhook.event_types", "must name session event types, not UNSPECIFIED");
                        return None;
                    }
                }
            }
            Some(types)
        })
    } else {
        Some(Vec::new())
    };
    let booking_event_types = if wanted("booking_event_types") {
        v.check(convert::booking_statuses(
            "webhook.booking_event_types",
            &w.booking_event_types,
        ))
        .map(|names| names.iter().filter_map(|n| n.parse().ok()).collect())
    } else {
        Some(Vec::new())
    };
    let booking_event_kinds = if wanted("booking_event_kinds") {
        let mut kinds = Vec::new();
        for raw in &w.booking_event_kinds {
            let kind = match pb::BookingEventKind::try_from(*raw) {
                Ok(pb::BookingEventKind::Rescheduled) => BookingEventKind::Rescheduled,
                Ok(pb::BookingEventKind::TimeChanged) => BookingEventKind::TimeChanged,
                _ => {
                    v.add(
                        "webhook.booking_event_kinds",
                        "must name RESCHEDULED or TIME_CHANGED (status changes are chosen by booking_event_types)",
                    );
                    break;
                }
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Some(kinds)
    } else {
        Some(Vec::new())
    };
    let filter = if wanted("filter") {
        let f = w.filter.clone().unwrap_or_default();
        let mentor_id = v.check(input::optional_id("webhook.filter.mentor_id", &f.mentor_id));
        let mentee_id = v.check(input::optional_id("webhook.filter.mentee_id", &f.mentee_id));
        let listing_id = v.check(input::optional_id("webhook.filter.listing_id", &f.listing_id));
        (|| {
            Some(Filter {
                mentor_id: mentor_id?,
                mentee_id: mentee_id?,
                listing_id: listing_id?,
            })
        })()
    } else {
        Some(Filter::default())
    };
    Some(WebhookFields {
        url: url?,
        event_types: event_types?,
        booking_event_types: booking_event_types?,
        booking_event_kinds: booking_event_kinds?,
        filter: filter?,
        enabled: w.enabled.unwrap_or(true),
    })
}

impl Parse for pb::CreateWebhookRequest {
    type Parsed = WebhookFields;
    fn parse(&self) -> Result<WebhookFields> {
        let mut v = Violations::new();
        let w = self.webhook.clone().unwrap_or_default();
        let fields = fields(&w, &mut v, None);
        v.into_result(fields)
    }
}

impl Parse for pb::GetWebhookRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("webhook_id", &self.webhook_id)
    }
}

impl Parse for pb::ListWebhooksRequest {
    type Parsed = Page;
    fn parse(&self) -> Result<Page> {
        convert::page(self.page_size, &self.page_token)
    }
}

impl Parse for pb::UpdateWebhookRequest {
    type Parsed = WebhookUpdate;
    fn parse(&self) -> Result<WebhookUpdate> {
        let mut v = Violations::new();
        let w = self.webhook.clone().unwrap_or_default();
        let id = v.check(input::id("webhook.id", &w.id));
        let paths = self.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name at least one field");
        }
        for path in &paths {
            if !UPDATABLE.contains(&path.as_str()) {
                v.add(
                    "update_mask",
                    format!(
                        "{:?} is not a field UpdateWebhook changes (url, event_types, booking_event_types, \
                         booking_event_kinds, filter, enabled)",
                        input::truncate(path)
                    ),
                );
            }
        }
        let patch = fields(&w, &mut v, Some(&paths));
        let update = (|| {
            Some(WebhookUpdate {
                id: id?,
                patch: patch?,
                paths: paths.clone(),
            })
        })();
        v.into_result(update)
    }
}

impl Parse for pb::DeleteWebhookRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("webhook_id", &self.webhook_id)
    }
}

impl Parse for pb::RotateWebhookSecretRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("webhook_id", &self.webhook_id)
    }
}

impl Parse for pb::ListDeliveriesRequest {
    type Parsed = (Uuid, Page);
    fn parse(&self) -> Result<(Uuid, Page)> {
        let mut v = Violations::new();
        let id = v.check(input::id("webhook_id", &self.webhook_id));
        let page = v.check(convert::page(self.page_size, &self.page_token));
        v.into_result((|| Some((id?, page?)))())
    }
}

impl Parse for pb::RetryDeliveryRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("delivery_id", &self.delivery_id)
    }
}
