"""`relay events MESSAGE_ID`, `relay suppression list|add|remove`, `relay webhook add|list|remove|rotate-secret`."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from relay.addresses import is_valid_address
from relay.commands import route
from relay.commands.output import emit
from relay.config import Config
from relay.errors import UsageError
from relay.events.payload import public_event
from relay.events.routes import public_suppression
from relay.store.store import Store
from relay.webhooks import manage


async def cmd_events(store: Store, args: argparse.Namespace) -> None:
    """A message's events, oldest first."""
    try:
        message_id = uuid.UUID(args.message_id)
    except ValueError:
        raise UsageError(f"not a message id: {args.message_id!r}") from None
    if await store.message(message_id) is None:
        raise UsageError(f"no such message: {message_id}")
    events = [public_event(e) for e in await store.events(message_id)]
    text = "\n".join(f"{e['timestamp']} {e['type']:22} {e['recipient'] or '-'} {json.dumps(e['data'])}"
                     for e in events)
    emit(args, events, text or "no events")


async def cmd_suppression_list(store: Store, args: argparse.Namespace) -> None:
    """An account's suppression list."""
    account = await store.find_account(args.account)
    entries = [public_suppression(e) for e in await store.suppressions(account.id)]
    text = "\n".join(f"{e['address']}\t{e['reason']}\t{e['createdAt']}" for e in entries)
    emit(args, entries, text or "the suppression list is empty")


async def cmd_suppression_add(store: Store, args: argparse.Namespace) -> None:
    """Suppress an address (reason manual)."""
    if not is_valid_address(args.address):
        raise UsageError(f"not an email address: {args.address!r}")
    account = await store.find_account(args.account)
    entry = public_suppression(await store.add_suppression(account.id, args.address, "manual"))
    emit(args, entry, f"account {account.name}: {entry['address']} suppressed ({entry['reason']})")


async def cmd_suppression_remove(store: Store, args: argparse.Namespace) -> None:
    """Take an address off the list."""
    account = await store.find_account(args.account)
    if not await store.remove_suppression(account.id, args.address):
        raise UsageError(f"{args.address} is not on account {account.name}'s suppression list")
    emit(args, {"address": args.address.lower(), "removed": True},
          f"account {account.name}: {args.address.lower()} removed from the suppression list")


async def cmd_webhook_add(store: Store, args: argparse.Namespace) -> None:
    """Register an endpoint; print its secret once."""
    cfg: Config = args.cfg
    account = await store.find_account(args.account)
    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    endpoint, secret = await manage.add(store, cfg.webhooks, account.id, args.url, events)
    shown = manage.public(endpoint, secret)
    emit(args, shown, f"webhook {shown['id']} for account {account.name} -> {shown['url']}\n"
                       f"secret: {secret}\n(shown once: store it now)")


async def cmd_webhook_list(store: Store, args: argparse.Namespace) -> None:
    """Endpoints of one account or all."""
    account_id = (await store.find_account(args.account)).id if args.account else None
    endpoints = [manage.public(e) | {"account_id": e["account_id"]} for e in await store.endpoints(account_id)]
    text = "\n".join(f"{e['id']}\t{e['account_id']}\t{'enabled' if e['enabled'] else 'DISABLED'}\t{e['url']}\t"
                     f"{','.join(e['events'] or ['all'])}" for e in endpoints)
    emit(args, endpoints, text or "no webhook endpoints")


async def cmd_webhook_remove(store: Store, args: argparse.Namespace) -> None:
    """Delete an endpoint."""
    if not await store.remove_endpoint(args.endpoint_id):
        raise UsageError(f"no such webhook endpoint: {args.endpoint_id}")
    emit(args, {"id": args.endpoint_id, "removed": True}, f"webhook {args.endpoint_id} removed")


async def cmd_webhook_rotate(store: Store, args: argparse.Namespace) -> None:
    """A new secret, printed once; the old one signs beside it for webhooks.rotation_overlap_hours."""
    cfg: Config = args.cfg
    endpoint, secret = await manage.rotate(store, cfg.webhooks, args.endpoint_id)
    emit(args, manage.public(endpoint, secret),
          f"webhook {endpoint['id']}: new secret {secret}\n(shown once; the previous secret keeps signing "
          f"for {cfg.webhooks.rotation_overlap_hours:g} hours)")


def register(sub: Any, leaf: Any) -> None:
    """Add the commands to the CLI."""
    leaf(sub, "events", cmd_events, "a message's events").add_argument("message_id")
    parent = sub.add_parser("suppression", help="manage an account's suppression list")
    suppression = parent.add_subparsers(dest="action", required=True, parser_class=type(parent))
    leaf(suppression, "list", cmd_suppression_list, "list suppressed addresses").add_argument("account")
    for verb, handler in (("add", cmd_suppression_add), ("remove", cmd_suppression_remove)):
        p = leaf(suppression, verb, handler, f"{verb} an address")
        p.add_argument("account")
        p.add_argument("address")
    parent = sub.add_parser("webhook", help="manage webhook endpoints")
    webhook = parent.add_subparsers(dest="action", required=True, parser_class=type(parent))
    p = leaf(webhook, "add", cmd_webhook_add, "register an endpoint (its secret is printed once)")
    p.add_argument("account")
    p.add_argument("url")
    p.add_argument("--events", help="comma-separated event types (default: all)")
    leaf(webhook, "list", cmd_webhook_list, "list endpoints").add_argument("--account")
    leaf(webhook, "remove", cmd_webhook_remove, "remove an endpoint").add_argument("endpoint_id")
    leaf(webhook, "rotate-secret", cmd_webhook_rotate, "new secret for an endpoint").add_argument("endpoint_id")
    leaf(webhook, "secret", route.cmd_webhook_secret,
         "show the account's signing secret (inbound route POSTs)").add_argument("account")
