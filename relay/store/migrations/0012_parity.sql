-- API parity (issue 18): tags and metadata with the message, scheduled sends.
-- tags: {name: value}; metadata: the caller's JSON object (<= 2 KB, checked by the API);
-- scheduled_at: send_at of a scheduled message (status 'queued', deliver_after = scheduled_at).

ALTER TABLE messages ADD COLUMN tags jsonb;
ALTER TABLE messages ADD COLUMN metadata jsonb;
ALTER TABLE messages ADD COLUMN scheduled_at timestamptz;

CREATE INDEX messages_tags ON messages USING gin (tags jsonb_path_ops) WHERE tags IS NOT NULL;
