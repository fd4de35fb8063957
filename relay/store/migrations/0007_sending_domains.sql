-- Sending domains and their DKIM keys (SPEC.md, "Sending domains and DKIM"). A domain belongs to
-- one account; it has one or more keys, one per selector. Of each algorithm one key is active (the
-- one mail is signed with); a rotation adds a pending key beside it, which takes over once its
-- record is seen in DNS, and the old key stays until removed. Private keys are sealed (AES-GCM
-- under a key derived from the server's key secret, relay/dkim/keys.py), never stored in clear.

CREATE TABLE sending_domains (
    domain     text PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    trusted    boolean NOT NULL DEFAULT false,  -- `relay domain add --trust`: signed before the DNS check
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sending_domains_account ON sending_domains (account_id);

CREATE TABLE dkim_keys (
    domain      text NOT NULL REFERENCES sending_domains(domain) ON DELETE CASCADE,
    selector    text NOT NULL,
    algorithm   text NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key bytea NOT NULL,  -- sealed
    public_key  text NOT NULL,   -- the p= value
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified')),
    active      boolean NOT NULL DEFAULT false,
    verified_at timestamptz,
    checked_at  timestamptz,
    check_detail text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, selector)
);
CREATE UNIQUE INDEX dkim_keys_one_active ON dkim_keys (domain, algorithm) WHERE active;
