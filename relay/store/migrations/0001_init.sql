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
CREATE FUNCTION relay_open(p_key_id text, p_default_limit integer)
RETURNS TABLE (retry_after double precision, enabled boolean, credits bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_limit   integer;
    v_enabled boolean;
    v_account bigint;
    v_calls   timestamptz[];
    v_kept    timestamptz[];
    v_n       integer;
BEGIN
    SELECT coalesce(k.calls_per_minute, p_default_limit), k.enabled, k.account_id
      INTO v_limit, v_enabled, v_account
      FROM api_keys k WHERE k.id = p_key_id;
    IF NOT FOUND OR NOT v_enabled THEN
        RETURN QUERY SELECT 0::double precision, coalesce(v_enabled, false), 0::bigint;
        RETURN;
    END IF;
    SELECT w.calls INTO v_calls FROM rate_windows w WHERE w.key_id = p_key_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_windows (key_id) VALUES (p_key_id) ON CONFLICT DO NOTHING;
        SELECT w.calls INTO v_calls FROM rate_windows w WHERE w.key_id = p_key_id FOR UPDATE;
    END IF;
    SELECT coalesce(array_agg(c ORDER BY c), '{}') INTO v_kept
      FROM unnest(v_calls) AS c WHERE c > v_now - interval '60 seconds';
    v_n := cardinality(v_kept);
    IF v_n >= v_limit THEN
        UPDATE rate_windows SET calls = v_kept WHERE key_id = p_key_id;
        -- the call that must leave the window before another fits
        RETURN QUERY SELECT greatest(extract(epoch FROM v_kept[v_n - v_limit + 1] + interval '60 seconds' - v_now)::double precision, 0.001),
                            true, 0::bigint;
        RETURN;
    END IF;
    UPDATE rate_windows SET calls = v_kept || v_now WHERE key_id = p_key_id;
    UPDATE api_keys SET last_used_at = v_now WHERE id = p_key_id
       AND (last_used_at IS NULL OR last_used_at < v_now - interval '1 minute');
    RETURN QUERY SELECT 0::double precision, true, a.credits FROM accounts a WHERE a.id = v_account;
END $$;

-- Steps 5-7 plus the write-ahead row, in one round trip: pre-flight balance, atomic debit,
-- daily cap, message row and ledger entry. Status is INSUFFICIENT_CREDITS, INSUFFICIENT_FUNDS,
-- 'sending' (relay it now) or 'queued' (over the cap; the caller stores the body next).
CREATE FUNCTION relay_admit(p_id uuid, p_channel text, p_key_id text, p_account_id bigint,
                            p_sender text, p_recipients integer, p_size integer, p_cost bigint,
                            p_cap integer)
RETURNS TABLE (status text, deliver_after timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_day     date := (v_now AT TIME ZONE 'UTC')::date;
    v_balance bigint;
    v_sent    integer;
    v_status  text := 'sending';
    v_after   timestamptz;
BEGIN
    SELECT a.credits INTO v_balance FROM accounts a WHERE a.id = p_account_id;
    IF v_balance IS NULL OR v_balance < p_cost THEN
        RETURN QUERY SELECT 'INSUFFICIENT_CREDITS'::text, NULL::timestamptz;
        RETURN;
    END IF;
    UPDATE accounts SET credits = credits - p_cost WHERE id = p_account_id AND credits >= p_cost;
    IF NOT FOUND THEN
        -- a concurrent debit won the race between our read and our update
        RETURN QUERY SELECT 'INSUFFICIENT_FUNDS'::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF p_cap > 0 THEN
        INSERT INTO sender_day_counts AS d (sender, day, sent) VALUES (p_sender, v_day, 1)
            ON CONFLICT (sender, day) DO UPDATE SET sent = d.sent + 1 WHERE d.sent < p_cap
            RETURNING d.sent INTO v_sent;
    END IF;
    IF v_sent IS NULL THEN
        v_status := 'queued';
        v_after := ((v_day + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
    INSERT INTO messages (id, channel, status, key_id, account_id, sender, recipient_count,
                          size_bytes, credits_charged, deliver_after, created_at, updated_at)
         VALUES (p_id, p_channel, v_status, p_key_id, p_account_id, p_sender, p_recipients,
                 p_size, p_cost, v_after, v_now, v_now);
    INSERT INTO credit_ledger (account_id, delta, kind, message_id)
         VALUES (p_account_id, -p_cost, 'debit', p_id);
    RETURN QUERY SELECT v_status, v_after;
END $$;

-- Step 8's bookkeeping in one round trip: final status, refund (at most once), and the
-- daily-cap slot given back when an immediate relay failed. False when already final.
CREATE FUNCTION relay_finalize(p_id uuid, p_status text, p_refund bigint, p_reply text,
                               p_failure_code integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint;
    v_sender  text;
    v_created timestamptz;
    v_was     text;
BEGIN
    SELECT m.account_id, m.sender, m.created_at, m.status INTO v_account, v_sender, v_created, v_was
      FROM messages m WHERE m.id = p_id AND m.status IN ('sending', 'queued') FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE messages
       SET status = p_status, credits_refunded = p_refund, upstream_reply = p_reply,
           failure_code = p_failure_code, updated_at = clock_timestamp(),
           finished_at = clock_timestamp()
     WHERE id = p_id;
    IF p_refund > 0 THEN
        UPDATE accounts SET credits = credits + p_refund WHERE id = v_account;
        INSERT INTO credit_ledger (account_id, delta, kind, message_id)
             VALUES (v_account, p_refund, 'refund', p_id);
    END IF;
    IF p_status = 'failed' AND v_was = 'sending' THEN
        UPDATE sender_day_counts SET sent = sent - 1
         WHERE sender = v_sender AND day = (v_created AT TIME ZONE 'UTC')::date AND sent > 0;
    END IF;
    DELETE FROM queued_bodies WHERE message_id = p_id;
    RETURN true;
END $$;
