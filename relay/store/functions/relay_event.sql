-- relay_event: the current definition (re-applied by the migration runner after every migrate).
-- One event, plus its webhook deliveries (the outbox) for the account's enabled endpoints that
-- take its type, in the caller's transaction: the event commits with the outcome or not at all.

CREATE OR REPLACE FUNCTION relay_event(p_account bigint, p_message uuid, p_type text, p_recipient text,
                                       p_data jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid := gen_random_uuid();
BEGIN
    INSERT INTO events (id, account_id, message_id, type, recipient, data)
         VALUES (v_id, p_account, p_message, p_type, p_recipient, coalesce(p_data, '{}'));
    INSERT INTO webhook_deliveries (event_id, endpoint_id)
         SELECT v_id, e.id FROM webhook_endpoints e
          WHERE e.account_id = p_account AND e.enabled
            AND (e.event_types IS NULL OR p_type = ANY (e.event_types));
    IF FOUND THEN
        PERFORM pg_notify('relay_webhooks', '');  -- delivered at commit: wakes the workers
    END IF;
    RETURN v_id;
END $$;
