"""Webhooks: endpoints per account, Standard Webhooks signing, the outbox worker (docs/events.md)."""
