"""Upstreams the relay hands accepted mail to, and how their replies are classified."""
