"""The pieces every OpenAPI fragment builds with (relay/openapi.py and the features' fragments)."""

from __future__ import annotations

from typing import Any

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def ref(kind: str, name: str) -> dict[str, str]:
    """A reference to a component: ref("schemas", "Failure")."""
    return {"$ref": f"#/components/{kind}/{name}"}


RETRY_AFTER = {"Retry-After": ref("headers", "RetryAfter")}


def as_json(schema: dict[str, Any]) -> dict[str, Any]:
    """A response or request body of JSON with this schema."""
    return {"application/json": {"schema": schema}}


def failure(description: str, *codes: str, retry_after: bool = False,
            headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure response: the failure envelope narrowed to `codes`, with Retry-After when retry_after
    (or the headers given)."""
    response: dict[str, Any] = {"description": description, "content": as_json(
        {**ref("schemas", "Failure"), "properties": {"code": {"enum": list(codes)}}})}
    headers = RETRY_AFTER if retry_after and headers is None else headers
    return response | ({"headers": headers} if headers else {})


# the statuses of every key-checked route (Api.principal: the key check, throttled per address)
KEY_FAILURES = {
    "401": failure("No bearer token (`KEY_MISSING`) or an unknown one (`KEY_INVALID`).", "KEY_MISSING",
                   "KEY_INVALID"),
    "403": failure("The key is disabled.", "KEY_DISABLED"),
    "429": failure("Too many failed key checks from this address.", "RATE_LIMITED", retry_after=True),
}
