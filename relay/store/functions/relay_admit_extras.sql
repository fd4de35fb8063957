-- relay_admit_extras: what a send carries besides the envelope (tags, metadata, send_at), written
-- onto the row relay_admit just inserted, in the same statement (one round trip, store/send.py).
-- A scheduled message is admitted as queued (cap 0: it does not count against the daily cap) and
-- becomes due at its send_at. p_status (relay_admit's answer) is not looked at: taking it makes the
-- call depend on relay_admit's row, so that the planner cannot run this one first.

CREATE OR REPLACE FUNCTION relay_admit_extras(p_id uuid, p_status text, p_tags jsonb, p_metadata jsonb,
                                              p_send_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- any row admit wrote (sending, queued, or another branch's statuses); a refusal wrote none
    IF p_tags IS NULL AND p_metadata IS NULL AND p_send_at IS NULL THEN
        RETURN false;
    END IF;
    UPDATE messages
       SET tags = p_tags, metadata = p_metadata, scheduled_at = p_send_at,
           deliver_after = coalesce(p_send_at, deliver_after)
     WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- events relay_admit wrote before this call (email.queued, email.suppressed) carry them too
    -- (and a scheduled message's email.queued says when it is due: its send_at, not the cap's midnight)
    UPDATE events
       SET data = data || CASE WHEN p_tags IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('tags', p_tags) END
                       || CASE WHEN p_metadata IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('metadata', p_metadata) END
                       || CASE WHEN p_send_at IS NOT NULL AND type = 'email.queued'
                               THEN jsonb_build_object('deliverAfter', p_send_at) ELSE '{}'::jsonb END
     WHERE message_id = p_id;
    IF p_send_at IS NOT NULL THEN  -- a repeat of the request answers 'scheduled', not 'queued'
        UPDATE idempotency_keys SET outcome = 'SCHEDULED' WHERE message_id = p_id;
    END IF;
    RETURN true;
END $$;
