-- The daily cap counts per account AND sender address (SPEC.md, Domain): two accounts authorized
-- for one address or domain no longer share a count, so one account cannot push another's mail
-- into the queue. Today's and yesterday's counts are rebuilt from the log (messages relayed
-- immediately: never queued), since the old rows cannot be split between accounts.

DELETE FROM sender_day_counts;
ALTER TABLE sender_day_counts DROP CONSTRAINT sender_day_counts_pkey;
ALTER TABLE sender_day_counts ADD COLUMN account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE;
ALTER TABLE sender_day_counts ADD PRIMARY KEY (account_id, sender, day);
INSERT INTO sender_day_counts (account_id, sender, day, sent)
SELECT account_id, sender, (created_at AT TIME ZONE 'UTC')::date, count(*)
  FROM messages
 WHERE deliver_after IS NULL AND status IN ('sending', 'sent')
   AND created_at >= (clock_timestamp() AT TIME ZONE 'UTC')::date - 1
 GROUP BY 1, 2, 3;
-- relay_admit and relay_finalize count per account: relay/store/functions/
