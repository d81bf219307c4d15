-- Webhook subscriptions and their deliveries (SPEC §4.6). Deliveries come
-- from committed events only: the dispatcher reads the feed of session
-- events after its cursor (one replica at a time) and inserts one delivery
-- per matching subscription in the transaction that moves the cursor.
CREATE TABLE webhooks (
    id          uuid        PRIMARY KEY,
    url         text        NOT NULL,
    -- SessionEventType names; empty: every type.
    event_types text[]      NOT NULL DEFAULT '{}',
    mentor_id   uuid,
    mentee_id   uuid,
    listing_id  uuid,
    enabled     boolean     NOT NULL,
    -- `whsec_` + base64 key (Standard Webhooks).
    secret      text        NOT NULL,
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- SUBSCRIPTION: made through WebhookService. NOTIFICATIONS: the one
    -- configured notification endpoint (notification intents), kept by
    -- the replicas from their config and invisible to the API.
    kind        text        NOT NULL DEFAULT 'SUBSCRIPTION' CHECK (kind IN ('SUBSCRIPTION', 'NOTIFICATIONS'))
);
CREATE UNIQUE INDEX webhooks_one_notification_endpoint ON webhooks (kind) WHERE kind = 'NOTIFICATIONS';
CREATE INDEX webhooks_created_idx ON webhooks (created_at DESC, id DESC);

CREATE TABLE webhook_deliveries (
    -- The `webhook-id` header: the same for every attempt.
    id              uuid        PRIMARY KEY,
    webhook_id      uuid        NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    session_id      uuid        NOT NULL,
    seq             bigint      NOT NULL,
    -- A notification intent's channel (slack, email); empty for a subscription.
    channel         text        NOT NULL DEFAULT '',
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    -- WAITING: behind an earlier delivery of the same subscription and
    -- session, which promotes it to PENDING when it ends.
    status          text        NOT NULL DEFAULT 'PENDING'
                                CHECK (status IN ('WAITING', 'PENDING', 'SUCCEEDED', 'FAILED')),
    -- PENDING: when it may be tried next (a claim moves it to the end of its lease).
    next_attempt_at timestamptz,
    -- Set by the first claim: retried until then, FAILED after.
    give_up_at      timestamptz,
    -- The claim of the attempt in flight: only its own record counts, so an
    -- attempt that outlived its lease cannot overwrite the next one's.
    claim           uuid,
    -- [{"at": …, "status_code": …, "error": …}], oldest first.
    attempts        jsonb       NOT NULL DEFAULT '[]',
    -- RetryDelivery: sent whatever the session's earlier deliveries are doing.
    manual          boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, session_id, seq, channel),
    CHECK ((status = 'PENDING') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_open_idx ON webhook_deliveries (webhook_id, session_id, seq)
    WHERE status IN ('WAITING', 'PENDING');
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (webhook_id, created_at DESC, id DESC);

-- Where the dispatcher is in the feed: every event at or before it has its deliveries.
CREATE TABLE webhook_cursor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    txid      bigint  NOT NULL,
    event_id  bigint  NOT NULL
);
INSERT INTO webhook_cursor (txid, event_id)
SELECT coalesce(max(txid), 0), coalesce(max(id), 0) FROM session_events;
