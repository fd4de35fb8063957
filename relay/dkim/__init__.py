"""DKIM for sending domains: signing, keys, the records to publish and their check over DNS."""
