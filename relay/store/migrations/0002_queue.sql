-- Cap-queue delivery: attempts and deferrals for retries, indexes for the worker and retention.
-- deliver_after now means "not before": the UTC day turn first, then each retry's backoff.

ALTER TABLE messages ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deferrals integer NOT NULL DEFAULT 0;  -- upstream 4xx answers

CREATE INDEX messages_queue_due ON messages (deliver_after) WHERE status = 'queued';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;

-- relay_finalize no longer deletes the body: retention does, after retention.keep_bodies_hours.
-- relay_finalize: defined in relay/store/functions/relay_finalize.sql
