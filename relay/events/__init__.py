"""After the send: events, the suppression list, the mailbox simulator (docs/events.md)."""
