"""Bounce processing: VERP tokens, bounce/complaint/auto-reply parsing, the mailbox simulator."""
