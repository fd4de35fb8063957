-- Inbound mail to HTTP: routes per account, the account's signing secret, and the inbound log.

-- The secret every POST of the account is signed with (Standard Webhooks); made with the first route
-- or webhook. During a rotation the previous secret signs too, until previous_until.
CREATE TABLE account_signing_secrets (
    account_id      bigint PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    secret          text NOT NULL CHECK (secret LIKE 'whsec\_%'),
    previous        text CHECK (previous LIKE 'whsec\_%'),
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inbound_routes (
    id             text PRIMARY KEY,                  -- rt_<hex>
    account_id     bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    match          text NOT NULL CHECK (length(match) BETWEEN 1 AND 500),
    url            text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    format         text NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'raw')),
    priority       integer NOT NULL DEFAULT 0,
    oversize_text  text CHECK (length(oversize_text) <= 400),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX inbound_routes_account ON inbound_routes (account_id);

-- One row per route a message was delivered (or refused) to. Account and route are not foreign
-- keys so that the log outlives them.
CREATE TABLE inbound_log (
    id             uuid PRIMARY KEY,
    account_id     bigint NOT NULL,
    route_id       text NOT NULL,
    url            text NOT NULL,
    recipients     text[] NOT NULL,
    sender         text NOT NULL,
    remote_ip      text NOT NULL,
    size_bytes     bigint NOT NULL,
    http_status    integer NOT NULL,                  -- 0: no HTTP answer
    response_text  text NOT NULL DEFAULT '',
    smtp_reply     text NOT NULL,
    outcome        text NOT NULL,                     -- delivered, refused, deferred, oversize
    webhook_id     text,
    duration_ms    integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX inbound_log_account_created ON inbound_log (account_id, created_at DESC);
CREATE INDEX inbound_log_created ON inbound_log (created_at DESC);
