-- relay_lease: the current definition (re-applied by the migration runner after every migrate).
-- Counts calls against a key's rolling minute (61 one-second buckets) and reads the balance. It
-- grants up to p_want calls of the current second at once (an instance's lease, spent in memory
-- until that second ends: relay/rate_lease.py), never more than the window has room for, and
-- first gives back p_back unused calls of an earlier lease of second p_back_second (when that
-- second is still in the window). A plain call is a lease of one with nothing to give back.

CREATE OR REPLACE FUNCTION relay_lease(p_key_id text, p_default_limit integer, p_want integer,
                                       p_back_second bigint, p_back integer)
RETURNS TABLE (retry_after double precision, enabled boolean, credits bigint, granted integer,
               second bigint, seconds_left double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_epoch   double precision := extract(epoch FROM v_now);
    v_sec     bigint := floor(v_epoch)::bigint;
    v_limit   integer;
    v_enabled boolean;
    v_account bigint;
    v_second  bigint;
    v_counts  integer[];
    v_shift   bigint;
    v_n       bigint;
    v_k       integer;
    v_grant   integer;
BEGIN
    SELECT coalesce(k.calls_per_minute, p_default_limit), k.enabled, k.account_id
      INTO v_limit, v_enabled, v_account
      FROM api_keys k WHERE k.id = p_key_id;
    IF NOT FOUND OR NOT v_enabled THEN
        RETURN QUERY SELECT 0::double precision, coalesce(v_enabled, false), 0::bigint, 0, v_sec, 0::double precision;
        RETURN;
    END IF;
    SELECT w.second, w.counts INTO v_second, v_counts FROM rate_windows w WHERE w.key_id = p_key_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_windows (key_id) VALUES (p_key_id) ON CONFLICT DO NOTHING;
        SELECT w.second, w.counts INTO v_second, v_counts FROM rate_windows w WHERE w.key_id = p_key_id FOR UPDATE;
    END IF;
    v_shift := v_sec - v_second;
    IF v_shift >= 61 THEN
        v_counts := array_fill(0, ARRAY[61]);
    ELSIF v_shift > 0 THEN
        v_counts := v_counts[v_shift + 1:61] || array_fill(0, ARRAY[v_shift::integer]);
    ELSIF v_shift < 0 THEN
        v_sec := v_second;  -- another instance's clock is ahead: count in its newest second
    END IF;
    IF p_back > 0 AND p_back_second IS NOT NULL AND v_sec - p_back_second BETWEEN 0 AND 60 THEN
        v_k := 61 - (v_sec - p_back_second)::integer;
        v_counts[v_k] := greatest(v_counts[v_k] - p_back, 0);
    END IF;
    SELECT sum(c) INTO v_n FROM unnest(v_counts) AS c;
    IF v_n >= v_limit THEN
        -- the oldest seconds that must leave the window before another call fits
        v_k := 0;
        WHILE v_n >= v_limit LOOP
            v_k := v_k + 1;
            v_n := v_n - v_counts[v_k];
        END LOOP;
        UPDATE rate_windows SET second = v_sec, counts = v_counts WHERE key_id = p_key_id;
        RETURN QUERY SELECT greatest((v_sec + v_k) - v_epoch, 0.001)::double precision, true, 0::bigint, 0, v_sec,
                            0::double precision;
        RETURN;
    END IF;
    -- near the limit a lease takes at most half of what is left, so other instances still get calls
    v_grant := least(greatest(p_want, 1), greatest(((v_limit - v_n) / 2)::integer, 1));
    v_counts[61] := v_counts[61] + v_grant;
    UPDATE rate_windows SET second = v_sec, counts = v_counts WHERE key_id = p_key_id;
    UPDATE api_keys SET last_used_at = v_now WHERE id = p_key_id
       AND (last_used_at IS NULL OR last_used_at < v_now - interval '1 minute');
    RETURN QUERY SELECT 0::double precision, true, a.credits, v_grant, v_sec, (v_sec + 1) - v_epoch
                   FROM accounts a WHERE a.id = v_account;
END $$;
