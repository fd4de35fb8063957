"""The dashboard: server-rendered pages for an account's people and the operator (docs/dashboard.md)."""
