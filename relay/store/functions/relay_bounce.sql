-- relay_bounce: the current definition (re-applied by the migration runner after every migrate).
-- What a bounce, a complaint or an auto-reply (or the mailbox simulator) says about one recipient
-- of a sent message: its event, the recipient's status, and a suppression when asked. Credits are
-- never touched: the mail left. False when the message is unknown.

CREATE OR REPLACE FUNCTION relay_bounce(p_message uuid, p_position integer, p_recipient text, p_type text,
                                        p_data jsonb, p_suppress_reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint;
    v_address text := p_recipient;
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
        v_address := coalesce(v_address, p_recipient);
    END IF;
    IF p_type IN ('email.bounced', 'email.complained') AND v_address IS NOT NULL THEN
        UPDATE message_recipients
           SET status = CASE p_type WHEN 'email.bounced' THEN 'bounced' ELSE 'complained' END
         WHERE message_id = p_message AND lower(address) = lower(v_address);
    END IF;
    PERFORM relay_event(v_account, p_message, p_type, v_address, p_data);
    IF p_suppress_reason IS NOT NULL AND v_address IS NOT NULL THEN
        INSERT INTO suppressions (account_id, address, reason, message_id)
             VALUES (v_account, lower(v_address), p_suppress_reason, p_message)
        ON CONFLICT (account_id, address) DO NOTHING;
    END IF;
    RETURN true;
END $$;
