-- Safe retries: the first response of every mutating call made with a
-- request_id, stored in the same transaction as the change it describes.
CREATE TABLE idempotency_keys (
    request_id  uuid        PRIMARY KEY,
    -- sha256 of method, caller and request: the same id with another request is refused.
    fingerprint bytea       NOT NULL,
    -- Encoded protobuf response.
    response    bytea       NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Purging keys older than the retention window walks this index.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
