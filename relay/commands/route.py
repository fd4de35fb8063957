"""`relay route add|list|remove`, `relay inbound logs` and `relay webhook secret` (the account's signing
secret, until the webhooks feature has a module of its own)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from relay.commands.output import emit
from relay.errors import StoreError, UsageError
from relay.inbound.manage import RouteRefused, check_route, route_json
from relay.outbound import ssrf
from relay.store.store import Store


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


async def cmd_route_add(store: Store, args: argparse.Namespace) -> None:
    """Create a route; the first one of an account also makes its signing secret."""
    account = await store.find_account(args.account)
    # --allow-private: the operator vouches for the URL (delivery still needs inbound.allow_private_targets)
    policy = ssrf.Policy(allow_private=args.cfg.inbound.allow_private_targets or args.allow_private)
    try:
        spec = await check_route(args.match, args.url, format=args.format, priority=args.priority,
                                 oversize_text=args.oversize_text, policy=policy)
    except RouteRefused as exc:
        raise UsageError(str(exc)) from None
    route, secret, made = await store.create_route(account.id, spec.match, spec.url, format=spec.format,
                                                   priority=spec.priority, oversize_text=spec.oversize_text)
    text = f"route {route.id}: {route.match} -> {route.url} ({route.format.value}, priority {route.priority})"
    if made:
        text += f"\nsigning secret of {account.name} (every POST is signed with it): {secret}"
    emit(args, route_json(route) | {"signing_secret": secret}, text)


async def cmd_route_list(store: Store, args: argparse.Namespace) -> None:
    """List routes, in the order they are tried."""
    account_id = (await store.find_account(args.account)).id if args.account else None
    routes = await store.list_routes(account_id)
    emit(args, [route_json(r) for r in routes],
          "\n".join(f"{r.id}\t{r.account_name}\t{r.priority}\t{r.match}\t{r.format.value}\t{r.url}" for r in routes)
          or "no routes")


async def cmd_route_remove(store: Store, args: argparse.Namespace) -> None:
    """Delete a route."""
    if not await store.remove_route(args.route_id):
        raise StoreError(f"no route {args.route_id!r}")
    emit(args, {"id": args.route_id, "removed": True}, f"route {args.route_id} removed")


async def cmd_webhook_secret(store: Store, args: argparse.Namespace) -> None:
    """Show the account's signing secret (made now if the account has none yet)."""
    account = await store.find_account(args.account)
    secret, _made = await store.ensure_signing_secret(account.id)
    emit(args, {"id": account.id, "account": account.name, "secret": secret}, secret)


async def cmd_inbound_logs(store: Store, args: argparse.Namespace) -> None:
    """The inbound log, newest first."""
    account_id = (await store.find_account(args.account)).id if args.account else None
    rows = await store.inbound_logs(account_id, args.limit)
    lines = [f"{r.created_at:%Y-%m-%d %H:%M:%S} {r.id} {r.route_id} {','.join(r.recipients)} "
             f"from {r.sender or '<>'} {r.size_bytes}B http {r.http_status} -> {r.smtp_reply} ({r.duration_ms} ms)"
             for r in rows]
    emit(args, [r.as_json() for r in rows], "\n".join(lines) or "no inbound mail")


def _group(sub: Any, name: str, help_: str) -> Any:
    parent = sub.add_parser(name, help=help_)
    # the parent's class (cli's parser, whose errors are one line) for the subcommands too
    return parent.add_subparsers(dest="action", required=True, parser_class=type(parent))


def register(sub: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `route`, `inbound` and `webhook secret` to the command tree."""
    route = _group(sub, "route", "inbound routes: mail for an address POSTed to an app")
    p = leaf(route, "add", cmd_route_add, "route mail for MATCH (address, *@domain or /regex/) to URL")
    p.add_argument("account")
    p.add_argument("match")
    p.add_argument("url")
    p.add_argument("--format", choices=["json", "raw"], default="json")
    p.add_argument("--priority", type=_integer, default=0, help="lower is tried first (default 0)")
    p.add_argument("--oversize-text", default=None, help="the text of the 552 reply to mail over the size limit")
    p.add_argument("--allow-private", action="store_true",
                   help="accept a URL on a loopback/private address (delivered only where "
                        "inbound.allow_private_targets is true, as in relay dev)")
    leaf(route, "list", cmd_route_list, "list routes in the order they are tried").add_argument(
        "account", nargs="?")
    leaf(route, "remove", cmd_route_remove, "delete a route").add_argument("route_id")

    inbound = _group(sub, "inbound", "the inbound log")
    p = leaf(inbound, "logs", cmd_inbound_logs, "inbound mail, newest first")
    p.add_argument("--account")
    p.add_argument("--limit", type=_integer, default=50)
    # `relay webhook secret` (cmd_webhook_secret) is registered by relay/commands/events.py's webhook group
