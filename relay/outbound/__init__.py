"""Outbound HTTP: the shared client, SSRF checks and Standard Webhooks signing (inbound POSTs, webhooks)."""
