-- Cap-queue delivery: attempts and deferrals for retries, indexes for the worker and retention.
-- deliver_after now means "not before": the UTC day turn first, then each retry's backoff.

ALTER TABLE messages ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deferrals integer NOT NULL DEFAULT 0;  -- upstream 4xx answers

CREATE INDEX messages_queue_due ON messages (deliver_after) WHERE status = 'queued';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;

-- relay_finalize no longer deletes the body: retention does, after retention.keep_bodies_hours.
CREATE OR REPLACE FUNCTION relay_finalize(p_id uuid, p_status text, p_refund bigint, p_reply text,
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
    RETURN true;
END $$;
