"""The ways mail and requests come in: each a Channel, assembled by relay/channels/registry.py."""
