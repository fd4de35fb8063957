-- relay_finalize released a message's idempotency key on a retryable failure only when the
-- message was 'sending'. A message admitted as 'queued' has its key's outcome set to QUEUED at
-- admit; when its body could not be stored (the client was told "try again") or a crash left it
-- without one, the key kept QUEUED, so the retry replayed "queued" for a message that had failed
-- and been refunded. Now a retryable failure releases the key whatever the message's state was.

-- relay_finalize: defined in relay/store/functions/relay_finalize.sql
