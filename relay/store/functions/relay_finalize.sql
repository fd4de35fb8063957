-- relay_finalize: the current definition (re-applied by the migration runner after every migrate).
-- The fate of a message: final status, refund (at most once), the daily-cap slot given back when an
-- immediate relay failed, the recipients' statuses, and the outcome's events (email.sent with the
-- accepted recipients, email.failed for the message or for each refused recipient), in one
-- transaction. False when already final.

DROP FUNCTION IF EXISTS relay_finalize(uuid, text, bigint, text, integer, boolean);

CREATE OR REPLACE FUNCTION relay_finalize(p_id uuid, p_status text, p_refund bigint, p_reply text,
                                          p_failure_code integer, p_retryable boolean DEFAULT false,
                                          p_refused text[] DEFAULT '{}')
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_account  bigint;
    v_sender   text;
    v_created  timestamptz;
    v_was      text;
    v_sent     text[];
    v_failed   text[];
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
    IF v_was = 'sending' AND p_status = 'failed' THEN
        UPDATE sender_day_counts SET sent = sent - 1
         WHERE account_id = v_account AND sender = v_sender AND day = (v_created AT TIME ZONE 'UTC')::date AND sent > 0;
    END IF;
    IF p_retryable THEN
        DELETE FROM idempotency_keys WHERE message_id = p_id;
    ELSIF v_was = 'sending' THEN
        UPDATE idempotency_keys
           SET outcome = CASE p_status WHEN 'sent' THEN 'SENT' ELSE 'RELAY_FAILED' END, reply = p_reply
         WHERE message_id = p_id;
    END IF;
    -- recipients follow the message (status NULL) but for those the upstream refused
    IF p_status = 'sent' AND cardinality(p_refused) > 0 THEN
        UPDATE message_recipients SET status = 'failed'
         WHERE message_id = p_id AND status IS NULL AND address = ANY (p_refused);
    END IF;
    SELECT array_agg(address ORDER BY position) INTO v_sent
      FROM message_recipients WHERE message_id = p_id AND status IS NULL;
    v_failed := CASE WHEN p_status = 'sent' THEN p_refused ELSE v_sent END;
    IF p_status = 'sent' THEN
        PERFORM relay_event(v_account, p_id, 'email.sent', NULL,
                            jsonb_build_object('recipients', to_jsonb(coalesce(v_sent, '{}')), 'reply', p_reply));
        PERFORM relay_event(v_account, p_id, 'email.failed', v_failed[i],
                            jsonb_build_object('failureCode', p_failure_code, 'reply', p_reply))
           FROM generate_subscripts(v_failed, 1) AS i;
    ELSE
        PERFORM relay_event(v_account, p_id, 'email.failed', NULL,
                            jsonb_build_object('recipients', to_jsonb(coalesce(v_failed, '{}')),
                                               'failureCode', p_failure_code, 'reply', p_reply,
                                               'refunded', p_refund));
    END IF;
    RETURN true;
END $$;
