-- Accounts, keys, senders, the credit ledger, the message log, the cap queue,
-- and the SQL functions of the hot path (one round trip per step).

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    credits     bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id                text PRIMARY KEY,               -- the public id inside rk_<id>_<secret>
    account_id        bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name              text NOT NULL DEFAULT '',
    digest            bytea NOT NULL,                 -- HMAC-SHA-256 of the secret; the secret is never stored
    enabled           boolean NOT NULL DEFAULT true,
    calls_per_minute  integer CHECK (calls_per_minute > 0),  -- NULL: limits.calls_per_minute
    created_at        timestamptz NOT NULL DEFAULT now(),
    rotated_at        timestamptz,
    last_used_at      timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE senders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    pattern     text NOT NULL CHECK (pattern = lower(pattern)),  -- 'app@example.com' or 'example.com'
    daily_cap   integer CHECK (daily_cap >= 0),                  -- NULL: limits.default_daily_cap
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, pattern)
);

-- Every charged message, and its fate. Account and key are not foreign keys so that
-- the log outlives them.
CREATE TABLE messages (
    id                uuid PRIMARY KEY,
    channel           text NOT NULL CHECK (channel IN ('api', 'smtp')),
    status            text NOT NULL CHECK (status IN ('sending', 'sent', 'queued', 'failed')),
    key_id            text NOT NULL,
    account_id        bigint NOT NULL,
    sender            text NOT NULL,
    recipient_count   integer NOT NULL CHECK (recipient_count > 0),
    size_bytes        integer NOT NULL,
    credits_charged   bigint NOT NULL CHECK (credits_charged >= 0),
    credits_refunded  bigint NOT NULL DEFAULT 0 CHECK (credits_refunded BETWEEN 0 AND credits_charged),
    upstream_reply    text,
    failure_code      integer,
    deliver_after     timestamptz,                    -- queued: when the sender's UTC day turns
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz
);
CREATE INDEX messages_account_created ON messages (account_id, created_at DESC);
CREATE INDEX messages_created ON messages (created_at DESC);
CREATE INDEX messages_unfinished ON messages (status, updated_at) WHERE status IN ('sending', 'queued');

-- Durable bodies of queued messages (deleted once delivered or failed).
CREATE TABLE queued_bodies (
    message_id  uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    mail_from   text NOT NULL,
    recipients  text[] NOT NULL,
    data        bytea NOT NULL
);

-- Every change of a balance; accounts.credits is the sum of an account's rows.
CREATE TABLE credit_ledger (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL,
    delta       bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('topup', 'debit', 'refund')),
    message_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX credit_ledger_account ON credit_ledger (account_id);
-- at most one debit and one refund per message: a refund can never happen twice
CREATE UNIQUE INDEX credit_ledger_once ON credit_ledger (message_id, kind) WHERE message_id IS NOT NULL;

-- Rolling-minute rate limit: the times of each key's recent calls, shared by all instances.
CREATE TABLE rate_windows (
    key_id  text PRIMARY KEY,
    calls   timestamptz[] NOT NULL DEFAULT '{}'
);

-- Messages relayed immediately per sender address per UTC day (the daily cap).
CREATE TABLE sender_day_counts (
    sender  text NOT NULL,
    day     date NOT NULL,
    sent    integer NOT NULL CHECK (sent >= 0),
    PRIMARY KEY (sender, day)
);

-- Step 2 and the early part of step 5: count a call against the key's rolling minute
-- and read the balance. Returns the seconds to wait (0: allowed), the key's state and the balance.
-- relay_open: replaced by relay_lease (relay/store/functions/relay_lease.sql; 0013 drops it)

-- Steps 5-7 plus the write-ahead row, in one round trip: pre-flight balance, atomic debit,
-- daily cap, message row and ledger entry. Status is INSUFFICIENT_CREDITS, INSUFFICIENT_FUNDS,
-- 'sending' (relay it now) or 'queued' (over the cap; the caller stores the body next).
-- relay_admit: defined in relay/store/functions/relay_admit.sql

-- Step 8's bookkeeping in one round trip: final status, refund (at most once), and the
-- daily-cap slot given back when an immediate relay failed. False when already final.
-- relay_finalize: defined in relay/store/functions/relay_finalize.sql
