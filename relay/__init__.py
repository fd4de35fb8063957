"""relay: a self-hosted transactional-mail relay."""
