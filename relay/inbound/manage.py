"""Creating routes, the same for the CLI and the API: every check a route must pass before it is stored."""

from __future__ import annotations

from dataclasses import dataclass

from relay.domain import SenderRule
from relay.errors import RelayError
from relay.inbound.routes import BadMatch, Format, MatchKind, Route, compile_match
from relay.outbound import ssrf

MAX_URL = 2000
MAX_PRIORITY = 1_000_000


class RouteRefused(RelayError):
    """A route that cannot be created, with the reason worded for the user."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route as asked for, checked and normalized."""

    match: str
    url: str
    format: Format
    priority: int
    oversize_text: str | None


async def check_route(match: str, url: str, *, format: str = "json", priority: int = 0,
                      oversize_text: str | None = None, policy: ssrf.Policy,
                      own_domains: tuple[SenderRule, ...] | None = None) -> RouteSpec:
    """The route, checked: a valid match, an http(s) URL whose host is allowed (SSRF, after DNS), a
    known format, a bounded priority, a one-line printable oversize text. With own_domains (the API,
    where an account creates its own routes) the match must lie inside the account's sender domains."""
    try:
        matcher = compile_match(match)
    except BadMatch as exc:
        raise RouteRefused(str(exc)) from None
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise RouteRefused(f"the URL must be 1-{MAX_URL} characters")
    try:
        await ssrf.check_url(url, policy)
    except ssrf.TargetRefused as exc:
        raise RouteRefused(f"target refused: {exc}") from None
    try:
        kind = Format(format)
    except ValueError:
        raise RouteRefused("format must be json or raw") from None
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise RouteRefused(f"priority must be a whole number between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    if oversize_text is not None and (not isinstance(oversize_text, str) or not 0 < len(oversize_text) <= 400
                                      or not all(" " <= c <= "~" for c in oversize_text)):
        raise RouteRefused("the oversize text must be 1-400 printable ASCII characters on one line")
    if own_domains is not None:
        _check_owned(matcher.kind, matcher.text, own_domains)
    return RouteSpec(matcher.text, url, kind, priority, oversize_text)


def _check_owned(kind: MatchKind, text: str, senders: tuple[SenderRule, ...]) -> None:
    """An account may only route mail for domains it is authorized to send from: otherwise one account
    could take another's inbound mail with a route of higher priority."""
    if kind is MatchKind.REGEX:
        raise RouteRefused("regular-expression routes are created by the operator (relay route add)")
    domain = text.rpartition("@")[2]
    owned = {rule.pattern.rpartition("@")[2] for rule in senders}
    if domain not in owned:
        raise RouteRefused(f"{domain} is not one of this account's sender domains")


def route_json(route: Route) -> dict[str, object]:
    """A route as the API and `--json` show it."""
    return {"id": route.id, "account_id": route.account_id, "account": route.account_name, "match": route.match,
            "url": route.url, "format": route.format.value, "priority": route.priority,
            "oversize_text": route.oversize_text,
            "created_at": route.created.isoformat() if route.created else None}
