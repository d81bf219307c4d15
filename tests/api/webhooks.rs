//! Webhooks (SPEC §4.6): subscriptions, and deliveries made from committed
//! events to a real HTTP receiver running in the test: signed, in order per
//! session, retried after failures, kept across a replica killed mid-delivery,
//! and never held up by another subscription's dead endpoint.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use mentorship::grpc::pb;
use sha2::Sha256;
use tonic::Code;

use mentorship::app::{Rules, targets::Targets};

use crate::helpers::*;
pub use crate::receiver::{Received, Receiver, allowing_loopback};

/// Whether `r` carries a valid Standard Webhooks signature under `secret`,
/// computed here independently of the service's code.
fn verifies(r: &Received, secret: &str, raw_body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(raw_body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature.split(' ').any(|s| s == format!("v1,{expected}"))
}

/// A webhook for `url`, for the session events of `w`'s mentee that the
/// tests make (creations and status changes; every session also makes a
/// booking event, which only `everything` wants).
pub fn subscription(url: &str, w: &World) -> pb::Webhook {
    pb::Webhook {
        event_types: vec![
            pb::SessionEventType::Created as i32,
            pb::SessionEventType::StatusChanged as i32,
        ],
        ..everything(url, w)
    }
}

/// A webhook for `url`, for every event of `w`'s mentee.
pub fn everything(url: &str, w: &World) -> pb::Webhook {
    pb::Webhook {
        url: url.into(),
        enabled: Some(true),
        filter: Some(pb::WebhookFilter {
            mentee_id: w.mentee.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(c: &Caller, webhook: pb::Webhook) -> pb::CreateWebhookResponse {
    c.call(pb::CreateWebhookRequest {
        webhook: Some(webhook),
        request_id: String::new(),
    })
    .await
    .expect("create webhook")
}

/// Dispatches until `n` events have been read. The feed only shows
/// transactions older than every open one in the cluster, and the suite's
/// other tests share the cluster: a read can stop short for a moment.
async fn dispatch(app: &mentorship::app::App, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut read = 0;
    while read < n && tokio::time::Instant::now() < deadline {
        read += mentorship::jobs::webhooks::dispatch_all(app).await.expect("dispatch");
        if read < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(read, n, "events dispatched");
}

/// Makes every pending delivery due now (skipping the backoff's wait).
pub async fn due_now(app: &TestApp) {
    sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE status = 'PENDING'")
        .execute(&app.pool)
        .await
        .expect("due now");
}

#[tokio::test]
async fn subscriptions_are_managed_by_coordinators_and_services_and_the_secret_is_shown_once() {
    let app = spawn_with(1, allowing_loopback(Rules::default())).await;
    let c = app.coordinator();
    let w = world(&app).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = pb::CreateWebhookRequest {
        webhook: Some(pb::Webhook {
            event_types: vec![pb::SessionEventType::StatusChanged as i32],
            ..subscription("https://example.com/hooks/mentorship", &w)
        }),
        request_id: request_id.clone(),
    };
    let created = c.call(request.clone()).await.expect("create");
    assert!(created.signing_secret.starts_with("whsec_"), "{created:?}");
    let webhook = created.webhook.clone().expect("webhook");
    assert_eq!(webhook.url, "https://example.com/hooks/mentorship");
    assert_eq!(webhook.event_types, [pb::SessionEventType::StatusChanged as i32]);
    // A retry with the same request id: the same subscription, no secret.
    let replay = c.call(request).await.expect("replay");
    assert_eq!(replay.webhook, created.webhook);
    assert_eq!(replay.signing_secret, "");
    assert_eq!(app.count("webhooks").await, 1);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT response FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .expect("the remembered response");
    let stored = <pb::CreateWebhookResponse as prost::Message>::decode(stored.as_slice()).expect("decodes");
    assert_eq!(stored.webhook, created.webhook);
    assert_eq!(stored.signing_secret, "", "the remembered response holds no secret");

    // Reads never show it.
    let got = c
        .call(pb::GetWebhookRequest {
            webhook_id: webhook.id.clone(),
        })
        .await
        .expect("get");
    assert_eq!(got.webhook.as_ref(), Some(&webhook));
    let listed = c.call(pb::ListWebhooksRequest::default()).await.expect("list");
    assert_eq!(listed.webhooks, std::slice::from_ref(&webhook));

    // Update by mask, rotate, and a Slack URL shown without its path.
    let updated = c
        .call(pb::UpdateWebhookRequest {
            webhook: Some(pb::Webhook {
                id: webhook.id.clone(),
                url: "https://hooks.slack.com/services/T0/B0/secret-token".into(),
                enabled: Some(false),
                ..Default::default()
            }),
            update_mask: Some(mask(&["url", "enabled"])),
            request_id: String::new(),
        })
        .await
        .expect("update")
        .webhook
        .expect("webhook");
    assert_eq!(updated.url, "https://hooks.slack.com/***");
    assert_eq!(updated.enabled, Some(false));
    assert_eq!(updated.event_types, webhook.event_types, "unmasked fields kept");
    assert_ne!(updated.etag, webhook.etag);
    let rotated = c
        .call(pb::RotateWebhookSecretRequest {
            webhook_id: webhook.id.clone(),
            request_id: String::new(),
        })
        .await
        .expect("rotate");
    assert!(rotated.signing_secret.starts_with("whsec_"));
    assert_ne!(rotated.signing_secret, created.signing_secret);

    // Only coordinators and services; bad input changes nothing.
    let mentee = app.as_(&w.mentee_token());
    let denied = mentee.call(pb::ListWebhooksRequest::default()).await;
    assert_status(denied, Code::PermissionDenied, "PERMISSION_DENIED");
    let before = app.count("webhooks").await;
    let bad = app
        .as_(&service())
        .call(pb::CreateWebhookRequest {
            webhook: Some(pb::Webhook {
                url: "ftp://example.com/".into(),
                event_types: vec![0],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    let status = assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["webhook.url", "webhook.event_types"]);
    assert_eq!(app.count("webhooks").await, before);

    c.call(pb::DeleteWebhookRequest {
        webhook_id: webhook.id.clone(),
        request_id: String::new(),
    })
    .await
    .expect("delete");
    let gone = c.call(pb::GetWebhookRequest { webhook_id: webhook.id }).await;
    assert_status(gone, Code::NotFound, "WEBHOOK_NOT_FOUND");
}

#[tokio::test]
async fn deliveries_are_signed_sent_in_order_and_retried_after_failures() {
    let app = spawn_with(1, allowing_loopback(roomy_rules())).await;
    let receiver = Receiver::start().await;
    receiver.fail_first(2);
    let c = app.coordinator();
    let w = world(&app).await;
    let created = create(&c, subscription(&receiver.url(), &w)).await;
    let secret = created.signing_secret.clone();
    let webhook_id = created.webhook.expect("webhook").id;

    // Three events: CREATED (ACTIVE on demand), paused, resumed.
    let s = on_demand(&app, &w, None).await.expect("create");
    c.pause_session(&s.id, "lunch").await.expect("pause");
    c.resume_session(&s.id).await.expect("resume");
    let replica = &app.replicas[0].app;
    let client = mentorship::jobs::webhooks::Clients::new(Duration::from_secs(5), Targets::Any).expect("clients");
    let step = || mentorship::jobs::webhooks::step(replica, &client);

    // One delivery per event; only the first may go while it is pending.
    // And the on-demand session's booking event.
    dispatch(replica, 4).await;
    let attempted = mentorship::jobs::webhooks::deliver_once(replica, &client)
        .await
        .expect("deliver");
    assert_eq!(attempted, 1);
    let listed = c
        .call(pb::ListDeliveriesRequest {
            webhook_id: webhook_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list deliveries");
    let mut statuses: Vec<(i64, pb::DeliveryStatus)> = listed.deliveries.iter().map(|d| (d.seq, d.status())).collect();
    statuses.sort_by_key(|(seq, _)| *seq);
    assert_eq!(
        statuses,
        [
            (1, pb::DeliveryStatus::Pending),
            (2, pb::DeliveryStatus::Waiting),
            (3, pb::DeliveryStatus::Waiting)
        ],
        "the later ones wait behind the failing first one"
    );
    for _ in 0..2 {
        due_now(&app).await;
        assert_eq!(step().await.expect("step").1, 1, "the failing first one, again");
    }
    // It got through on its third attempt; the others follow one by one.
    for _ in 0..3 {
        due_now(&app).await;
        step().await.expect("step");
    }
    let got = receiver.received();
    let seqs: Vec<(i64, u16)> = got
        .iter()
        .map(|r| (r.body["data"]["seq"].as_i64().expect("seq"), r.status))
        .collect();
    assert_eq!(
        seqs,
        [(1, 500), (1, 500), (1, 200), (2, 200), (3, 200)],
        "in order, retried"
    );
    assert_eq!(got[0].id, got[2].id, "one webhook-id across the attempts");
    for r in &got {
        assert!(verifies(r, &secret, &r.raw), "signature of {r:?}");
        assert_eq!(r.body["data"]["session_id"], s.id.as_str());
    }
    assert_eq!(got[0].body["type"], "session.created");
    assert_eq!(got[1].body["data"]["to_status"], "ACTIVE");
    assert_eq!(got[3].body["data"]["to_status"], "PAUSED");

    // The history: attempts with status codes; all succeeded.
    let listed = c
        .call(pb::ListDeliveriesRequest {
            webhook_id,
            ..Default::default()
        })
        .await
        .expect("list deliveries");
    let mut deliveries = listed.deliveries;
    deliveries.sort_by_key(|d| d.seq);
    let codes: Vec<Vec<i32>> = deliveries
        .iter()
        .map(|d| d.attempts.iter().map(|a| a.status_code).collect())
        .collect();
    assert_eq!(codes, [vec![500, 500, 200], vec![200], vec![200]]);
    assert!(deliveries.iter().all(|d| d.status() == pb::DeliveryStatus::Succeeded));
    assert!(deliveries.iter().all(|d| d.next_attempt_time.is_none()));

    // RetryDelivery sends one again now, out of order, and says so.
    let retried = c
        .call(pb::RetryDeliveryRequest {
            delivery_id: deliveries[0].id.clone(),
            request_id: String::new(),
        })
        .await
        .expect("retry");
    assert!(retried.out_of_order, "later deliveries were already sent");
    assert_eq!(step().await.expect("step").1, 1);
    let last = receiver.received().pop().expect("the retry");
    assert_eq!(last.id, deliveries[0].id);
}

/// Two transactions on one session can reach the feed in the opposite order
/// to their seqs: the feed is in transaction-id order, and a transaction
/// that took its id before it locked the session (the sweeper finishing one
/// session, then promoting a queued one) writes the later seq with the
/// earlier id. The test makes that interleaving with a transaction of its
/// own that stands in for such a writer.
#[tokio::test]
async fn deliveries_keep_the_sessions_order_when_the_feed_shows_a_later_event_first() {
    let app = spawn_with(1, allowing_loopback(roomy_rules())).await;
    let receiver = Receiver::start().await;
    let c = app.coordinator();
    let w = world(&app).await;
    create(&c, everything(&receiver.url(), &w)).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let replica = &app.replicas[0].app;
    let client = mentorship::jobs::webhooks::Clients::new(Duration::from_secs(5), Targets::Any).expect("clients");
    dispatch(replica, 2).await; // CREATED and its booking's event
    mentorship::jobs::webhooks::deliver_once(replica, &client)
        .await
        .expect("deliver");

    // A writer takes its transaction id, then the pause commits seq 2, and
    // then the writer commits seq 3 under its older id.
    let mut writer = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *writer)
        .await
        .expect("take an id");
    c.pause_session(&s.id, "lunch").await.expect("pause");
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, type, actor_kind, reason)
         VALUES ($1::uuid, 3, 'CHECKED_IN', 'SYSTEM', 'written with the older transaction id')",
    )
    .bind(&s.id)
    .execute(&mut *writer)
    .await
    .expect("seq 3");
    writer.commit().await.expect("commit");
    let feed: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM session_events WHERE session_id = $1::uuid ORDER BY txid, id")
            .bind(&s.id)
            .fetch_all(&app.pool)
            .await
            .expect("feed order");
    assert_eq!(feed, [1, 3, 2], "the feed shows seq 3 before seq 2");

    dispatch(replica, 2).await;
    for _ in 0..3 {
        mentorship::jobs::webhooks::deliver_once(replica, &client)
            .await
            .expect("deliver");
    }
    let seqs: Vec<i64> = receiver
        .received()
        .iter()
        .filter(|r| r.body["data"]["session_id"] == s.id.as_str())
        .map(|r| r.body["data"]["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3], "in the session's order");
}

/// A transaction of the test's own that has taken its transaction id: the
/// feed shows nothing newer until it ends.
async fn holding_an_id(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an id");
    tx
}

/// Commits, in `writer` (which took its id earlier), the session's seq 4.
async fn write_seq_4(mut writer: sqlx::Transaction<'static, sqlx::Postgres>, session_id: &str) {
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, type, actor_kind, reason)
         VALUES ($1::uuid, 4, 'CHECKED_IN', 'SYSTEM', 'written with an older transaction id')",
    )
    .bind(session_id)
    .execute(&mut *writer)
    .await
    .expect("seq 4");
    writer.commit().await.expect("commit");
}

/// The seqs of `session_id`'s deliveries that reached `receiver`, in order.
fn session_seqs(receiver: &Receiver, session_id: &str) -> Vec<i64> {
    receiver
        .received()
        .iter()
        .filter(|r| r.body["data"]["session_id"] == session_id)
        .map(|r| r.body["data"]["seq"].as_i64().expect("seq"))
        .collect()
}

/// An app with a subscription to every event of a world's mentee, and an
/// on-demand session whose first events have been delivered.
struct OneSession {
    app: TestApp,
    receiver: Receiver,
    s: pb::Session,
    client: mentorship::jobs::webhooks::Clients,
}

impl OneSession {
    async fn start() -> OneSession {
        let app = spawn_with(1, allowing_loopback(roomy_rules())).await;
        let receiver = Receiver::start().await;
        let w = world(&app).await;
        create(&app.coordinator(), everything(&receiver.url(), &w)).await;
        let s = on_demand(&app, &w, None).await.expect("create");
        let client = mentorship::jobs::webhooks::Clients::new(Duration::from_secs(5), Targets::Any).expect("clients");
        let one = OneSession {
            app,
            receiver,
            s,
            client,
        };
        one.dispatch(2).await;
        one.deliver().await;
        one
    }

    async fn dispatch(&self, n: usize) {
        dispatch(&self.app.replicas[0].app, n).await;
    }

    /// One round of attempts; how many.
    async fn deliver(&self) -> usize {
        mentorship::jobs::webhooks::deliver_once(&self.app.replicas[0].app, &self.client)
            .await
            .expect("deliver")
    }
}

#[tokio::test]
async fn a_later_event_dispatched_first_waits_for_the_earlier_ones_dispatched_after_it() {
    let one = OneSession::start().await;
    let (app, receiver, s) = (&one.app, &one.receiver, &one.s);
    let c = app.coordinator();

    // Seq 4 has the oldest id; a transaction opened after it holds seqs 2
    // and 3 back, so the dispatcher reads 4 alone, and 2 and 3 later.
    let writer = holding_an_id(&app.pool).await;
    let horizon = holding_an_id(&app.pool).await;
    c.pause_session(&s.id, "lunch").await.expect("pause");
    c.resume_session(&s.id).await.expect("resume");
    write_seq_4(writer, &s.id).await;
    one.dispatch(1).await;
    assert_eq!(one.deliver().await, 0, "seq 4 waits for the events before it");
    horizon.rollback().await.expect("end");
    one.dispatch(2).await;
    for _ in 0..4 {
        one.deliver().await;
    }
    assert_eq!(session_seqs(receiver, &s.id), [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_delivery_sent_right_after_the_one_before_it_still_waits_for_an_undispatched_event() {
    let one = OneSession::start().await;
    let (app, receiver, s) = (&one.app, &one.receiver, &one.s);
    let c = app.coordinator();

    // Seq 4 has the oldest id, seq 2 the next; a transaction opened between
    // seq 2 and seq 3 holds seq 3 back: the dispatcher reads 2 and 4 first.
    let writer = holding_an_id(&app.pool).await;
    c.pause_session(&s.id, "lunch").await.expect("pause");
    let horizon = holding_an_id(&app.pool).await;
    c.resume_session(&s.id).await.expect("resume");
    write_seq_4(writer, &s.id).await;
    one.dispatch(2).await;
    // Seq 2 goes, and its success hands seq 4 over, which must not go
    // before seq 3.
    assert_eq!(one.deliver().await, 1);
    assert_eq!(session_seqs(receiver, &s.id), [1, 2]);
    horizon.rollback().await.expect("end");
    one.dispatch(1).await;
    for _ in 0..3 {
        one.deliver().await;
    }
    assert_eq!(session_seqs(receiver, &s.id), [1, 2, 3, 4]);
}

#[tokio::test]
async fn booking_events_are_delivered_in_order_to_the_subscriptions_that_want_them() {
    let app = spawn_with(1, allowing_loopback(roomy_rules())).await;
    let c = app.coordinator();
    let w = world(&app).await;
    let (all_events, bookings, sessions) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let all = create(&c, everything(&all_events.url(), &w)).await;
    let accepted = create(
        &c,
        pb::Webhook {
            booking_event_types: vec![pb::BookingStatus::Accepted as i32],
            ..everything(&bookings.url(), &w)
        },
    )
    .await
    .webhook
    .expect("webhook");
    assert_eq!(accepted.booking_event_types, [pb::BookingStatus::Accepted as i32]);
    create(
        &c,
        pb::Webhook {
            event_types: vec![pb::SessionEventType::Created as i32],
            ..everything(&sessions.url(), &w)
        },
    )
    .await;
    let bad = c
        .call(pb::CreateWebhookRequest {
            webhook: Some(pb::Webhook {
                booking_event_types: vec![0],
                ..everything(&bookings.url(), &w)
            }),
            request_id: String::new(),
        })
        .await;
    let status = assert_status(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["webhook.booking_event_types"]);

    // Booking 1 is made and accepted (which makes a session); the
    // subscription for accepted bookings is changed to take cancelled ones
    // too (a subscription is matched when the dispatcher reads the event,
    // which here is after all of them); booking 2 is made and cancelled.
    let b1 = draft(&app, &w, monday_at(10), monday_at(11)).await;
    let session = accept(&app, &b1.id).await.expect("accept").session.expect("session");
    let updated = c
        .call(pb::UpdateWebhookRequest {
            webhook: Some(pb::Webhook {
                id: accepted.id.clone(),
                booking_event_types: vec![pb::BookingStatus::Accepted as i32, pb::BookingStatus::Cancelled as i32],
                ..Default::default()
            }),
            update_mask: Some(mask(&["booking_event_types"])),
            request_id: String::new(),
        })
        .await
        .expect("update")
        .webhook
        .expect("webhook");
    assert_eq!(updated.booking_event_types.len(), 2);
    let b2 = draft(&app, &w, monday_at(13), monday_at(14)).await;
    c.cancel_booking(&b2.id, "changed my mind").await.expect("cancel");

    let replica = &app.replicas[0].app;
    let client = mentorship::jobs::webhooks::Clients::new(Duration::from_secs(5), Targets::Any).expect("clients");
    dispatch(replica, 5).await;
    for _ in 0..4 {
        mentorship::jobs::webhooks::deliver_once(replica, &client)
            .await
            .expect("deliver");
    }

    // Everything: the four booking events, each booking's in order, and the session's.
    let got = all_events.received();
    let of = |booking: &str| -> Vec<(i64, String)> {
        got.iter()
            .filter(|r| r.body["data"]["booking_id"] == booking)
            .map(|r| {
                (
                    r.body["data"]["seq"].as_i64().expect("seq"),
                    r.body["type"].as_str().expect("type").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        of(&b1.id),
        [(1, "booking.created".into()), (2, "booking.accepted".into())]
    );
    assert_eq!(
        of(&b2.id),
        [(1, "booking.created".into()), (2, "booking.cancelled".into())]
    );
    let types: Vec<&str> = got.iter().filter_map(|r| r.body["type"].as_str()).collect();
    assert_eq!(types.len(), 5, "{types:?}");
    assert!(types.contains(&"session.created"));
    for r in &got {
        assert!(verifies(r, &all.signing_secret, &r.raw), "signature of {r:?}");
    }
    let accepted_body = &got
        .iter()
        .find(|r| r.body["type"] == "booking.accepted")
        .expect("accepted")
        .body;
    assert_eq!(accepted_body["data"]["from_status"], "DRAFT");
    assert_eq!(accepted_body["data"]["to_status"], "ACCEPTED");
    assert_eq!(accepted_body["data"]["mentee_id"], w.mentee.to_string());
    assert_eq!(accepted_body["data"]["actor"]["kind"], "COORDINATOR");

    // Only what each asked for.
    let types = |r: &Receiver| -> Vec<String> {
        r.received()
            .iter()
            .map(|r| r.body["type"].as_str().expect("type").to_owned())
            .collect()
    };
    assert_eq!(types(&bookings), ["booking.accepted", "booking.cancelled"]);
    assert_eq!(types(&sessions), ["session.created"]);
    assert_eq!(sessions.received()[0].body["data"]["session_id"], session.id.as_str());

    // ListDeliveries names each delivery's booking or session.
    let listed = c
        .call(pb::ListDeliveriesRequest {
            webhook_id: accepted.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list deliveries")
        .deliveries;
    let mut shown: Vec<(String, String, i32, i64, pb::DeliveryStatus)> = listed
        .iter()
        .map(|d| {
            (
                d.booking_id.clone(),
                d.session_id.clone(),
                d.booking_status,
                d.seq,
                d.status(),
            )
        })
        .collect();
    shown.sort();
    let mut want = vec![
        (
            b1.id.clone(),
            String::new(),
            pb::BookingStatus::Accepted as i32,
            2,
            pb::DeliveryStatus::Succeeded,
        ),
        (
            b2.id.clone(),
            String::new(),
            pb::BookingStatus::Cancelled as i32,
            2,
            pb::DeliveryStatus::Succeeded,
        ),
    ];
    want.sort();
    assert_eq!(shown, want);
}

#[tokio::test]
async fn a_delivery_failing_past_its_retry_period_is_failed_and_lets_the_next_one_go() {
    let app = spawn_with(1, allowing_loopback(roomy_rules())).await;
    let receiver = Receiver::start().await;
    receiver.fail_first(usize::MAX);
    let c = app.coordinator();
    let w = world(&app).await;
    let webhook_id = create(&c, subscription(&receiver.url(), &w))
        .await
        .webhook
        .expect("webhook")
        .id;
    let s = on_demand(&app, &w, None).await.expect("create");
    c.pause_session(&s.id, "lunch").await.expect("pause");
    let replica = &app.replicas[0].app;
    let client = mentorship::jobs::webhooks::Clients::new(Duration::from_secs(5), Targets::Any).expect("clients");
    let deliver = || mentorship::jobs::webhooks::deliver_once(replica, &client);
    dispatch(replica, 3).await;
    assert_eq!(deliver().await.expect("deliver"), 1, "the first, which fails");

    // The first claim started the retry period: 24 hours by default.
    let period: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM give_up_at - created_at)::float8 FROM webhook_deliveries
         WHERE webhook_id = $1::uuid AND seq = 1",
    )
    .bind(&webhook_id)
    .fetch_one(&app.pool)
    .await
    .expect("give_up_at");
    assert!(
        (24.0 * 3600.0 - 60.0..24.0 * 3600.0 + 60.0).contains(&period),
        "{period}"
    );

    // The period runs out (moved, not waited for): the next failure is the last.
    sqlx::query(
        "UPDATE webhook_deliveries SET give_up_at = now() - interval '1 second', next_attempt_at = now()
         WHERE webhook_id = $1::uuid AND seq = 1",
    )
    .bind(&webhook_id)
    .execute(&app.pool)
    .await
    .expect("run the period out");
    assert_eq!(deliver().await.expect("deliver"), 1, "the first, once more");
    let listed = |webhook_id: String| async {
        let mut d = c
            .call(pb::ListDeliveriesRequest {
                webhook_id,
                ..Default::default()
            })
            .await
            .expect("list deliveries")
            .deliveries;
        d.sort_by_key(|d| d.seq);
        d
    };
    let deliveries = listed(webhook_id.clone()).await;
    assert_eq!(deliveries[0].status(), pb::DeliveryStatus::Failed);
    assert_eq!(deliveries[0].attempts.len(), 2);
    assert!(deliveries[0].attempts.iter().all(|a| a.status_code == 500));
    assert!(deliveries[0].next_attempt_time.is_none());
    // Failed for good, it no longer holds the session's next one back.
    assert_eq!(deliveries[1].status(), pb::DeliveryStatus::Pending);
    assert_eq!(deliver().await.expect("deliver"), 1, "the second goes");
    let seqs: Vec<i64> = receiver
        .received()
        .iter()
        .map(|r| r.body["data"]["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 1, 2]);
}

#[tokio::test]
async fn a_dead_endpoint_never_delays_another_subscription() {
    // Real time: the replica's own webhook loop delivers.
    let app = spawn_jobs(1, allowing_loopback(roomy_rules()), Jobs::RealTime).await;
    let receiver = Receiver::start().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let c = app.coordinator();
    let w = world(&app).await;
    let dead_hook = create(&c, subscription(&format!("http://{dead}/hook"), &w)).await;
    create(&c, subscription(&receiver.url(), &w)).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    c.pause_session(&s.id, "lunch").await.expect("pause");
    let got = receiver.wait_for(Duration::from_secs(5), |got| got.len() >= 2).await;
    assert_eq!(got.len(), 2, "the live endpoint got both events");
    // The dead one was tried (its attempt may still be on its way) and waits
    // for its retry, holding back only its own.
    let dead_id = dead_hook.webhook.expect("webhook").id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let dead_deliveries = loop {
        let listed = c
            .call(pb::ListDeliveriesRequest {
                webhook_id: dead_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .deliveries;
        if listed.iter().any(|d| !d.attempts.is_empty()) || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead_deliveries.len(), 2);
    let tried: Vec<_> = dead_deliveries.iter().filter(|d| !d.attempts.is_empty()).collect();
    assert_eq!(tried.len(), 1, "the second waits behind the first: {dead_deliveries:?}");
    assert_eq!(tried[0].attempts[0].status_code, 0);
    // What kind of failure it was stays in the log: callers see only that it failed.
    assert_eq!(tried[0].attempts[0].error, "the request failed");
    assert_eq!(tried[0].status(), pb::DeliveryStatus::Pending);
    assert!(tried[0].next_attempt_time.is_some());
}

#[tokio::test]
async fn nothing_is_lost_when_a_replica_dies_mid_delivery() {
    let database_url = fresh_database().await;
    let config = std::env::temp_dir().join(format!("mentorship-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&config, "webhooks:\n  timeout_seconds: 1\n").expect("config");
    let config_path = config.to_str().expect("utf-8").to_owned();
    let env = [
        ("MENTORSHIP_CONFIG", config_path.as_str()),
        ("MENTORSHIP_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true"),
    ];
    let receiver = Receiver::start().await;
    receiver.hold();
    let mut first = spawn_binary(&database_url, &env).await;
    let c = first.as_(&coordinator());
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let w = world_on(&c).await;
    let created = create(&c, subscription(&receiver.url(), &w)).await;
    let webhook_id = created.webhook.expect("webhook").id;
    let mentee = w.mentee.to_string();
    let listing = w.listing.to_string();
    let session = c
        .create_session(pb::CreateSessionRequest {
            mentee_id: mentee,
            listing_id: listing,
            ..Default::default()
        })
        .await
        .expect("create session");
    c.pause_session(&session.id, "lunch").await.expect("pause");

    // The first replica is mid-delivery (the receiver holds the POST): kill it.
    let got = receiver.wait_for(Duration::from_secs(10), |got| !got.is_empty()).await;
    assert_eq!(got.len(), 1, "the first attempt reached the receiver");
    unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) };
    let _ = first.child.wait();
    receiver.release();

    // Another replica takes over once the lease ends; nothing is lost.
    let second = spawn_binary(&database_url, &env).await;
    let got = receiver
        .wait_for(Duration::from_secs(20), |got| {
            let seqs: std::collections::BTreeSet<i64> = got
                .iter()
                .filter(|r| r.status == 200)
                .filter_map(|r| r.body["data"]["seq"].as_i64())
                .collect();
            seqs.len() == 2
        })
        .await;
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert!(ids.len() >= 3, "the killed attempt was made again: {ids:?}");
    assert_eq!(ids[0], ids[1], "the repeat carries the same webhook-id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let statuses = loop {
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE webhook_id = $1::uuid ORDER BY seq")
                .bind(&webhook_id)
                .fetch_all(&pool)
                .await
                .expect("statuses");
        if statuses.iter().all(|s| s == "SUCCEEDED") || tokio::time::Instant::now() > deadline {
            break statuses;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(statuses, ["SUCCEEDED", "SUCCEEDED"], "each delivery once, none lost");
    drop(second);
    let _ = std::fs::remove_file(&config);
}

#[tokio::test]
async fn notification_intents_follow_each_sessions_settings() {
    use mentorship::{domain::capacity::Limits, secret::Secret};
    let receiver = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let defaults = Rules::default();
    let rules = Rules {
        // One slot per mentee: a second session queues.
        limits: Limits {
            per_mentee: 1,
            ..defaults.limits
        },
        webhooks: mentorship::app::WebhookRules {
            notifications: Some((receiver.url(), Secret::new(secret))),
            ..defaults.webhooks.clone()
        },
        ..defaults
    };
    let app = spawn_with(1, allowing_loopback(rules)).await;
    let c = app.coordinator();
    let w = world(&app).await;
    let settings = |slack, email, completion| pb::SessionConfig {
        notifications: Some(pb::NotificationSettings {
            slack,
            email,
            notify_on_state_change: true,
            notify_on_blocker: true,
            notify_on_escalation: true,
            notify_on_completion: completion,
            notify_on_queued: None,
            recipients: vec!["lead@example.com".into()],
        }),
        ..Default::default()
    };
    // A: both channels, completion off. B: queued behind A. C: no channel at all.
    let a = on_demand(&app, &w, Some((settings(true, true, false), vec!["notifications"])))
        .await
        .expect("a");
    let b = on_demand(&app, &w, None).await.expect("b");
    assert_eq!(b.status(), pb::SessionStatus::Queued);
    let replica = &app.replicas[0].app;
    let client = mentorship::jobs::webhooks::Clients::new(Duration::from_secs(5), Targets::Any).expect("clients");
    // Dispatched while B waits (as the running loop does, right after the
    // commit): its notice carries the estimated wait.
    dispatch(replica, 4).await; // two sessions, two bookings
    let other = world(&app).await;
    let quiet = on_demand(
        &app,
        &other,
        Some((settings(false, false, true), vec!["notifications"])),
    )
    .await
    .expect("c");
    c.record_check_in(&a.id, "blocked on review", true)
        .await
        .expect("blocker");
    c.complete_session(&a.id, None).await.expect("complete a");
    assert_eq!(
        get_session(&app, &b.id).await.status(),
        pb::SessionStatus::Active,
        "b promoted"
    );
    c.pause_session(&quiet.id, "lunch").await.expect("pause c");

    // C created and paused, A's blocker and completion, B's promotion.
    dispatch(replica, 6).await; // and C's booking
    for _ in 0..6 {
        mentorship::jobs::webhooks::step(replica, &client).await.expect("step");
    }
    let got = receiver.received();
    let mut notices: Vec<(String, String, String)> = got
        .iter()
        .map(|r| {
            assert_eq!(r.body["type"], "notification");
            assert!(verifies(r, secret, &r.raw), "signed with the configured secret");
            let d = &r.body["data"];
            let who = if d["session_id"] == a.id.as_str() {
                "a"
            } else if d["session_id"] == b.id.as_str() {
                "b"
            } else {
                "c"
            };
            (
                who.to_owned(),
                d["kind"].as_str().unwrap_or("").to_owned(),
                d["channel"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    notices.sort();
    let expected: Vec<(String, String, String)> = [
        ("a", "blocker", "email"),
        ("a", "blocker", "slack"),
        ("a", "state_change", "email"),
        ("a", "state_change", "slack"),
        ("b", "queued", "slack"),
        ("b", "state_change", "slack"),
    ]
    .iter()
    .map(|(s, k, c)| (s.to_string(), k.to_string(), c.to_string()))
    .collect();
    assert_eq!(notices, expected, "A's completion is off, C has no channel");
    let queued = got.iter().find(|r| r.body["data"]["kind"] == "queued").expect("queued");
    assert!(
        queued.body["data"]["estimated_wait_seconds"].as_i64().is_some(),
        "{:?}",
        queued.body
    );
    let to_a = got
        .iter()
        .find(|r| r.body["data"]["session_id"] == a.id.as_str())
        .expect("a");
    assert_eq!(to_a.body["data"]["recipients"], serde_json::json!(["lead@example.com"]));
    // The endpoint is no subscription: the API never shows it.
    let listed = c.call(pb::ListWebhooksRequest::default()).await.expect("list");
    assert!(listed.webhooks.is_empty());
}

#[tokio::test]
async fn a_slow_endpoint_holds_at_most_its_own_share_of_attempts() {
    // Real time: the replica's own loop; the slow endpoint never answers
    // until released.
    let app = spawn_jobs(1, allowing_loopback(roomy_rules()), Jobs::RealTime).await;
    let slow = Receiver::start().await;
    slow.hold();
    let live = Receiver::start().await;
    let c = app.coordinator();
    let w = world(&app).await;
    create(&c, subscription(&slow.url(), &w)).await;
    // Twelve sessions: twelve deliveries that could all go at once.
    let cap = mentorship::store::deliveries::PER_SUBSCRIPTION as usize;
    for _ in 0..cap + 4 {
        on_demand(&app, &w, None).await.expect("create");
    }
    let held = slow.wait_for(Duration::from_secs(5), |got| got.len() >= cap).await;
    assert_eq!(held.len(), cap, "as many as the cap, at once");
    // Another subscription is served meanwhile, and the slow one gets no more.
    let other = world(&app).await;
    create(&c, subscription(&live.url(), &other)).await;
    on_demand(&app, &other, None).await.expect("create");
    let got = live.wait_for(Duration::from_secs(5), |got| !got.is_empty()).await;
    assert_eq!(got.len(), 1, "the live endpoint is not held up");
    assert_eq!(slow.received().len(), cap, "no more than its share in flight");
    slow.release();
}
