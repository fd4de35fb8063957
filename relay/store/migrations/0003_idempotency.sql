-- Idempotency keys (API header or SMTP message header), per account, honoured for 24 hours.
-- outcome is NULL while the first submission is in flight, then the outcome it ended with
-- (SENT, QUEUED or RELAY_FAILED); a transient failure deletes the row so a retry runs again.

CREATE TABLE idempotency_keys (
    account_id   bigint NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,      -- SHA-256 of the payload: same key + other payload is refused
    message_id   uuid NOT NULL,
    outcome      text,
    reply        text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_keys_message ON idempotency_keys (message_id);

-- relay_admit with an optional idempotency key: checked before the balance, claimed in the same
-- transaction as the debit. Extra statuses: REPLAY (with the original message id, outcome and
-- reply), IDEMPOTENCY_MISMATCH, IDEMPOTENCY_IN_FLIGHT.
-- relay_admit: defined in relay/store/functions/relay_admit.sql

-- relay_finalize also settles the message's idempotency key: the outcome a replay will return,
-- or, when the failure is worth retrying (p_retryable), no key at all.
-- relay_finalize: defined in relay/store/functions/relay_finalize.sql
