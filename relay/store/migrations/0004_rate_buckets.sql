-- The rolling-minute rate limit as 61 one-second buckets per key instead of one timestamp per call:
-- O(1) per call whatever the limit (a key allowed 10^5 calls a minute used to rewrite 10^5
-- timestamps on every call, under its row lock). Conservative by under a second: a call counts
-- for up to 61 s, so no 60-second window ever holds more than the limit. Counts in flight at
-- deploy time are dropped (at most one minute's worth).

DROP TABLE rate_windows;
CREATE TABLE rate_windows (
    key_id  text PRIMARY KEY,
    second  bigint NOT NULL DEFAULT 0,                          -- the epoch second of counts[61]
    counts  integer[] NOT NULL DEFAULT array_fill(0, ARRAY[61])  -- counts[1] is 60 s before it
);

-- relay_open: replaced by relay_lease (relay/store/functions/relay_lease.sql; 0013 drops it)
