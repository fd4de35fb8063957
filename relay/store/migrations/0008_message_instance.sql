-- Each message names the relay process that admitted it (issue 16): that process holds a session
-- advisory lock on its id for as long as it lives, so the recovery sweep can settle the rows of a
-- process that died (its lock is free) at once, and never touches a live one's.
-- The value comes from the connection's relay.instance setting, so relay_admit is unchanged.
-- Rows from before (NULL) are settled by age, as they always were. No index of its own: the sweep
-- reads the few unfinished rows through messages_unfinished, so admitting costs no extra index write.
ALTER TABLE messages ADD COLUMN instance_id integer;
ALTER TABLE messages ALTER COLUMN instance_id SET DEFAULT nullif(current_setting('relay.instance', true), '')::integer;
