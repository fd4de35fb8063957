-- Idempotency keys (API header or SMTP message header), per account, honoured for 24 hours.
-- outcome is NULL while the first submission is in flight, then the outcome it ended with
-- (SENT, QUEUED or RELAY_FAILED); a transient failure deletes the row so a retry runs again.

CREATE TABLE idempotency_keys (
    account_id   bigint NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,      -- SHA-256 of the payload: same key + other payload is refused
    message_id   uuid NOT NULL,
    outcome      text,
    reply        text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_keys_message ON idempotency_keys (message_id);

-- relay_admit with an optional idempotency key: checked before the balance, claimed in the same
-- transaction as the debit. Extra statuses: REPLAY (with the original message id, outcome and
-- reply), IDEMPOTENCY_MISMATCH, IDEMPOTENCY_IN_FLIGHT.
DROP FUNCTION relay_admit(uuid, text, text, bigint, text, integer, integer, bigint, integer);
CREATE FUNCTION relay_admit(p_id uuid, p_channel text, p_key_id text, p_account_id bigint,
                            p_sender text, p_recipients integer, p_size integer, p_cost bigint,
                            p_cap integer, p_idem_key text DEFAULT NULL,
                            p_fingerprint bytea DEFAULT NULL)
RETURNS TABLE (status text, deliver_after timestamptz, original_id uuid, original_reply text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_day     date := (v_now AT TIME ZONE 'UTC')::date;
    v_balance bigint;
    v_sent    integer;
    v_status  text := 'sending';
    v_after   timestamptz;
    v_prior   idempotency_keys%ROWTYPE;
BEGIN
    IF p_idem_key IS NOT NULL THEN
        DELETE FROM idempotency_keys
         WHERE account_id = p_account_id AND key = p_idem_key AND created_at < v_now - interval '24 hours';
        -- a concurrent first submission holds this key's row lock until its admit commits
        INSERT INTO idempotency_keys (account_id, key, fingerprint, message_id)
             VALUES (p_account_id, p_idem_key, p_fingerprint, p_id)
        ON CONFLICT (account_id, key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_prior FROM idempotency_keys WHERE account_id = p_account_id AND key = p_idem_key;
            IF v_prior.fingerprint <> p_fingerprint THEN
                RETURN QUERY SELECT 'IDEMPOTENCY_MISMATCH'::text, NULL::timestamptz, v_prior.message_id, NULL::text;
            ELSIF v_prior.outcome IS NULL THEN
                RETURN QUERY SELECT 'IDEMPOTENCY_IN_FLIGHT'::text, NULL::timestamptz, v_prior.message_id, NULL::text;
            ELSE
                RETURN QUERY SELECT 'REPLAY:' || v_prior.outcome, NULL::timestamptz, v_prior.message_id,
                                    v_prior.reply;
            END IF;
            RETURN;
        END IF;
    END IF;
    SELECT a.credits INTO v_balance FROM accounts a WHERE a.id = p_account_id;
    IF v_balance IS NULL OR v_balance < p_cost THEN
        DELETE FROM idempotency_keys WHERE account_id = p_account_id AND key = p_idem_key;
        RETURN QUERY SELECT 'INSUFFICIENT_CREDITS'::text, NULL::timestamptz, NULL::uuid, NULL::text;
        RETURN;
    END IF;
    UPDATE accounts SET credits = credits - p_cost WHERE id = p_account_id AND credits >= p_cost;
    IF NOT FOUND THEN
        DELETE FROM idempotency_keys WHERE account_id = p_account_id AND key = p_idem_key;
        RETURN QUERY SELECT 'INSUFFICIENT_FUNDS'::text, NULL::timestamptz, NULL::uuid, NULL::text;
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
        UPDATE idempotency_keys SET outcome = 'QUEUED' WHERE account_id = p_account_id AND key = p_idem_key;
    END IF;
    INSERT INTO messages (id, channel, status, key_id, account_id, sender, recipient_count,
                          size_bytes, credits_charged, deliver_after, created_at, updated_at)
         VALUES (p_id, p_channel, v_status, p_key_id, p_account_id, p_sender, p_recipients,
                 p_size, p_cost, v_after, v_now, v_now);
    INSERT INTO credit_ledger (account_id, delta, kind, message_id)
         VALUES (p_account_id, -p_cost, 'debit', p_id);
    RETURN QUERY SELECT v_status, v_after, NULL::uuid, NULL::text;
END $$;

-- relay_finalize also settles the message's idempotency key: the outcome a replay will return,
-- or, when the failure is worth retrying (p_retryable), no key at all.
DROP FUNCTION relay_finalize(uuid, text, bigint, text, integer);
CREATE FUNCTION relay_finalize(p_id uuid, p_status text, p_refund bigint, p_reply text,
                               p_failure_code integer, p_retryable boolean DEFAULT false)
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
    IF v_was = 'sending' THEN
        IF p_status = 'failed' THEN
            UPDATE sender_day_counts SET sent = sent - 1
             WHERE sender = v_sender AND day = (v_created AT TIME ZONE 'UTC')::date AND sent > 0;
        END IF;
        IF p_retryable THEN
            DELETE FROM idempotency_keys WHERE message_id = p_id;
        ELSE
            UPDATE idempotency_keys
               SET outcome = CASE p_status WHEN 'sent' THEN 'SENT' ELSE 'RELAY_FAILED' END, reply = p_reply
             WHERE message_id = p_id;
        END IF;
    END IF;
    RETURN true;
END $$;
