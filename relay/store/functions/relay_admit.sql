-- relay_admit: the current definition (re-applied by the migration runner after every migrate).
-- Idempotency, the suppression list, pre-flight, debit, cap, the write-ahead row with its
-- recipients and subject, and the events of the outcome (queued, suppressed): one round trip.
-- The cost is p_unit per recipient that is neither suppressed nor free (p_free: the mailbox
-- simulator's, when the operator makes them free); p_presuppressed are treated as suppressed.

DROP FUNCTION IF EXISTS relay_admit(uuid, text, text, bigint, text, integer, integer, bigint, integer, text, bytea);

CREATE OR REPLACE FUNCTION relay_admit(p_id uuid, p_channel text, p_key_id text, p_account_id bigint,
                            p_sender text, p_recipients text[], p_size integer, p_unit bigint,
                            p_cap integer, p_idem_key text DEFAULT NULL,
                            p_fingerprint bytea DEFAULT NULL, p_subject text DEFAULT NULL,
                            p_free text[] DEFAULT '{}', p_presuppressed text[] DEFAULT '{}')
RETURNS TABLE (status text, deliver_after timestamptz, original_id uuid, original_reply text,
               charged bigint, suppressed text[], reasons text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_day     date := (v_now AT TIME ZONE 'UTC')::date;
    v_balance bigint;
    v_sent    integer;
    v_status  text := 'sending';
    v_after   timestamptz;
    v_prior   idempotency_keys%ROWTYPE;
    v_supp    text[];
    v_reasons text[];
    v_cost    bigint;
BEGIN
    -- a key disabled after its call was counted (its call came from an instance's lease of the
    -- current second, relay/rate_lease.py): disabling bites at once, before anything is written
    PERFORM FROM api_keys k WHERE k.id = p_key_id AND k.enabled;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'KEY_DISABLED'::text, NULL::timestamptz, NULL::uuid, NULL::text, 0::bigint,
                            NULL::text[], NULL::text[];
        RETURN;
    END IF;
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
                RETURN QUERY SELECT 'IDEMPOTENCY_MISMATCH'::text, NULL::timestamptz, v_prior.message_id, NULL::text,
                                    0::bigint, NULL::text[], NULL::text[];
            ELSIF v_prior.outcome IS NULL THEN
                RETURN QUERY SELECT 'IDEMPOTENCY_IN_FLIGHT'::text, NULL::timestamptz, v_prior.message_id, NULL::text,
                                    0::bigint, NULL::text[], NULL::text[];
            ELSE
                RETURN QUERY SELECT 'REPLAY:' || v_prior.outcome, NULL::timestamptz, v_prior.message_id,
                                    v_prior.reply, 0::bigint, NULL::text[], NULL::text[];
            END IF;
            RETURN;
        END IF;
    END IF;
    -- the suppression list, in this round trip (never a query per recipient)
    SELECT coalesce(array_agg(u.r ORDER BY u.n), '{}'), coalesce(array_agg(coalesce(s.reason, 'simulator') ORDER BY u.n), '{}')
      INTO v_supp, v_reasons
      FROM unnest(p_recipients) WITH ORDINALITY AS u(r, n)
      LEFT JOIN suppressions s ON s.account_id = p_account_id AND s.address = lower(u.r)
                              AND (s.expires_at IS NULL OR s.expires_at > v_now)
     WHERE s.address IS NOT NULL OR u.r = ANY (p_presuppressed);
    IF cardinality(v_supp) = cardinality(p_recipients) THEN
        -- nothing to send and nothing to charge
        UPDATE idempotency_keys SET outcome = 'SUPPRESSED' WHERE account_id = p_account_id AND key = p_idem_key;
        INSERT INTO messages (id, channel, status, key_id, account_id, sender, recipient_count, size_bytes,
                              credits_charged, subject, created_at, updated_at, finished_at)
             VALUES (p_id, p_channel, 'suppressed', p_key_id, p_account_id, p_sender, cardinality(p_recipients),
                     p_size, 0, p_subject, v_now, v_now, v_now);
        INSERT INTO message_recipients (message_id, position, address, status)
             SELECT p_id, n - 1, r, 'suppressed' FROM unnest(p_recipients) WITH ORDINALITY AS u(r, n);
        PERFORM relay_event(p_account_id, p_id, 'email.suppressed', v_supp[i], jsonb_build_object('reason', v_reasons[i]))
           FROM generate_subscripts(v_supp, 1) AS i;
        RETURN QUERY SELECT 'suppressed'::text, NULL::timestamptz, NULL::uuid, NULL::text, 0::bigint, v_supp, v_reasons;
        RETURN;
    END IF;
    SELECT p_unit * count(*) INTO v_cost FROM unnest(p_recipients) AS r
     WHERE NOT (r = ANY (v_supp)) AND NOT (r = ANY (p_free));
    SELECT a.credits INTO v_balance FROM accounts a WHERE a.id = p_account_id;
    IF v_balance IS NULL OR v_balance < v_cost THEN
        DELETE FROM idempotency_keys WHERE account_id = p_account_id AND key = p_idem_key;
        RETURN QUERY SELECT 'INSUFFICIENT_CREDITS'::text, NULL::timestamptz, NULL::uuid, NULL::text, v_cost,
                            NULL::text[], NULL::text[];
        RETURN;
    END IF;
    UPDATE accounts SET credits = credits - v_cost WHERE id = p_account_id AND credits >= v_cost;
    IF NOT FOUND THEN
        DELETE FROM idempotency_keys WHERE account_id = p_account_id AND key = p_idem_key;
        RETURN QUERY SELECT 'INSUFFICIENT_FUNDS'::text, NULL::timestamptz, NULL::uuid, NULL::text, v_cost,
                            NULL::text[], NULL::text[];
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
                          size_bytes, credits_charged, deliver_after, subject, created_at, updated_at)
         VALUES (p_id, p_channel, v_status, p_key_id, p_account_id, p_sender, cardinality(p_recipients),
                 p_size, v_cost, v_after, p_subject, v_now, v_now);
    -- a recipient's status NULL follows the message's (no per-recipient write at finalize)
    INSERT INTO message_recipients (message_id, position, address, status)
         SELECT p_id, n - 1, r, CASE WHEN r = ANY (v_supp) THEN 'suppressed' END
           FROM unnest(p_recipients) WITH ORDINALITY AS u(r, n);
    IF v_cost > 0 THEN
        INSERT INTO credit_ledger (account_id, delta, kind, message_id)
             VALUES (p_account_id, -v_cost, 'debit', p_id);
    END IF;
    IF cardinality(v_supp) > 0 THEN
        PERFORM relay_event(p_account_id, p_id, 'email.suppressed', v_supp[i], jsonb_build_object('reason', v_reasons[i]))
           FROM generate_subscripts(v_supp, 1) AS i;
    END IF;
    IF v_status = 'queued' THEN
        PERFORM relay_event(p_account_id, p_id, 'email.queued', NULL,
                            jsonb_build_object('deliverAfter', v_after,
                                               'recipients', to_jsonb(array(SELECT r FROM unnest(p_recipients) AS r
                                                                            WHERE NOT (r = ANY (v_supp))))));
    END IF;
    RETURN QUERY SELECT v_status, v_after, NULL::uuid, NULL::text, v_cost, v_supp, v_reasons;
END $$;
