-- Rate-limit leases (issue 17): relay_lease (relay/store/functions/relay_lease.sql) counts a call,
-- or grants an instance several calls of the current second at once, and replaces relay_open.

DROP FUNCTION IF EXISTS relay_open(text, integer);
