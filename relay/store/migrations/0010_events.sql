-- After the send (issue 13): recipients as rows, the subject, events (the webhook outbox),
-- suppressions, webhook endpoints, their deliveries and every attempt.

ALTER TABLE messages ADD COLUMN subject text;
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('sending', 'sent', 'queued', 'failed', 'suppressed'));

-- One row per recipient of a message. Its status is NULL while it follows the message's (sending,
-- queued, sent, failed: no per-recipient write when the message is settled), else its own:
-- suppressed, failed (refused while others were taken), bounced, complained.
CREATE TABLE message_recipients (
    message_id  uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position    smallint NOT NULL,               -- the order the client gave (and the VERP index)
    address     text NOT NULL,
    status      text,
    PRIMARY KEY (message_id, position)
);

-- Every event of every message, written in the transaction of the outcome that causes it. Rows of
-- accounts with webhook endpoints also get webhook_deliveries rows (relay_event): the outbox.
CREATE TABLE events (
    id          uuid PRIMARY KEY,
    account_id  bigint NOT NULL,
    message_id  uuid REFERENCES messages (id) ON DELETE CASCADE,
    type        text NOT NULL,
    recipient   text,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_message ON events (message_id, created_at);

-- Per account: addresses not to mail again.
CREATE TABLE suppressions (
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    address     text NOT NULL CHECK (address = lower(address)),
    reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'manual')),
    message_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz,
    PRIMARY KEY (account_id, address)
);

CREATE TABLE webhook_endpoints (
    id                  text PRIMARY KEY,
    account_id          bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url                 text NOT NULL,
    event_types         text[],                  -- NULL: every type
    secret              text NOT NULL,           -- whsec_...
    previous_secret     text,                    -- still signed with during a rotation
    previous_until      timestamptz,
    enabled             boolean NOT NULL DEFAULT true,
    disabled_reason     text,
    failing_since       timestamptz,             -- the first failure since the last success
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id) WHERE enabled;

-- One row per (event, endpoint): claimed by a worker with FOR UPDATE SKIP LOCKED plus a lease,
-- so several instances never send the same attempt twice and a dead worker's claim runs out.
CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until     timestamptz,
    lease_token     uuid,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

CREATE TABLE webhook_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    status_code   integer NOT NULL,               -- 0: no HTTP answer
    latency_ms    integer NOT NULL,
    response      text,                           -- the first 1 KB
    error         text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (delivery_id, attempt)
);

-- relay_event, relay_admit, relay_finalize, relay_bounce: relay/store/functions/
