-- relay_finalize: the current definition (re-applied by the migration runner after every migrate).

CREATE OR REPLACE FUNCTION relay_finalize(p_id uuid, p_status text, p_refund bigint, p_reply text,
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
    RETURN true;
END $$;
