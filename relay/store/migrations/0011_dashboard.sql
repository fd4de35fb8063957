-- The dashboard: people who log in (per account; an operator sees every account), their sessions,
-- failed-login counters shared by every instance, and the indexes behind the Logs tab's filters.

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email          text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash  text NOT NULL,                  -- argon2 (PHC string), see relay/dashboard/passwords.py
    operator       boolean NOT NULL DEFAULT false,  -- sees and may switch to every account
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz
);
CREATE INDEX users_account ON users (account_id);

-- Server-side sessions: the cookie holds a random token, the table its SHA-256, so logging out,
-- a password change or removing the user ends the session at once.
CREATE TABLE dashboard_sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,  -- the account in view
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions (user_id);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);

-- Failed logins per scope ('addr:<ip>' or 'user:<email>') within the current window.
CREATE TABLE login_failures (
    scope         text PRIMARY KEY,
    failures      integer NOT NULL,
    window_start  timestamptz NOT NULL
);

-- Logs tab: newest first with keyset pagination on (created_at, id), within one account, optionally
-- narrowed by status, channel or sender; a date range is a range of the same index.
CREATE INDEX messages_account_created_id ON messages (account_id, created_at DESC, id DESC);
DROP INDEX messages_account_created;  -- a prefix of the one above
CREATE INDEX messages_account_status_created ON messages (account_id, status, created_at DESC, id DESC);
CREATE INDEX messages_account_channel_created ON messages (account_id, channel, created_at DESC, id DESC);
CREATE INDEX messages_account_sender_created ON messages (account_id, sender, created_at DESC, id DESC);
-- Overview: the newest ledger entries of one account.
CREATE INDEX credit_ledger_account_id ON credit_ledger (account_id, id DESC);
