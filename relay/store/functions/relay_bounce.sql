-- relay_bounce: the current definition (re-applied by the migration runner after every migrate).
-- What a bounce, a complaint or an auto-reply (or the mailbox simulator) says about one recipient
-- of a sent message: its event, the recipient's status, and a suppression when asked. Credits are
-- never touched: the mail left. False when the message is unknown or the recipient is not one of
-- its recipients (then nothing is written).

CREATE OR REPLACE FUNCTION relay_bounce(p_message uuid, p_position integer, p_recipient text, p_type text,
                                        p_data jsonb, p_suppress_reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint;
    v_address text;
BEGIN
    SELECT m.account_id INTO v_account FROM messages m WHERE m.id = p_message;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_position IS NOT NULL THEN
        -- the authenticated token names the recipient, whatever address the report shows (an alias,
        -- a forward): the bounce came back to that recipient's own envelope sender
        SELECT r.address INTO v_address FROM message_recipients r
         WHERE r.message_id = p_message AND r.position = p_position;
    ELSE
        -- a whole-message token proves only the message: the report's address counts only if the
        -- message was sent to it, else a forged DSN could suppress any address
        SELECT r.address INTO v_address FROM message_recipients r
         WHERE r.message_id = p_message AND lower(r.address) = lower(p_recipient)
         ORDER BY r.position LIMIT 1;
    END IF;
    IF v_address IS NULL THEN
        RETURN false;
    END IF;
    IF p_type IN ('email.bounced', 'email.complained') THEN
        UPDATE message_recipients
           SET status = CASE p_type WHEN 'email.bounced' THEN 'bounced' ELSE 'complained' END
         WHERE message_id = p_message AND lower(address) = lower(v_address);
    END IF;
    PERFORM relay_event(v_account, p_message, p_type, v_address, p_data);
    IF p_suppress_reason IS NOT NULL THEN
        INSERT INTO suppressions (account_id, address, reason, message_id)
             VALUES (v_account, lower(v_address), p_suppress_reason, p_message)
        ON CONFLICT (account_id, address) DO NOTHING;
    END IF;
    RETURN true;
END $$;
