"""Inbound mail to HTTP: routes, the JSON and raw payloads, the POST and the SMTP reply it becomes."""
