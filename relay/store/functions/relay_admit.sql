-- relay_admit: the current definition (re-applied by the migration runner after every migrate).

CREATE OR REPLACE FUNCTION relay_admit(p_id uuid, p_channel text, p_key_id text, p_account_id bigint,
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
        INSERT INTO sender_day_counts AS d (account_id, sender, day, sent) VALUES (p_account_id, p_sender, v_day, 1)
            ON CONFLICT (account_id, sender, day) DO UPDATE SET sent = d.sent + 1 WHERE d.sent < p_cap
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
