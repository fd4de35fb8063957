"""The `relay` command: dev, serve, migrate, and the operator's account, key, sender and log commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

from relay import commands, devmode, keys
from relay import tags as relay_tags
from relay.addresses import is_valid_sender_pattern
from relay.commands.output import emit
from relay.config import Config, ConfigError, load_config
from relay.devmode import DEV_ACCOUNT, DEV_KEY_NAME, DEV_SENDER_DOMAIN
from relay.errors import RelayError, StoreError, StoreUnavailable, UsageError
from relay.runtime import database, key_secret, migrate_database
from relay.store.base import DATABASE_ERRORS
from relay.store.store import Store, as_dict


def _positive(name: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or int(value) <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number greater than 0")
        return int(value)
    return parse


def _non_negative(name: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit():
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, 0 or more")
        return int(value)
    return parse


# -- commands ---------------------------------------------------------------------------


async def cmd_migrate(cfg: Config, args: argparse.Namespace) -> None:
    """Apply pending migrations."""
    if not cfg.database.url:
        async with database(cfg):
            pass  # the embedded database is migrated on open
        emit(args, {"applied": "embedded"}, "embedded database is up to date")
        return
    try:
        ran = await migrate_database(cfg.database.url)
    except DATABASE_ERRORS as exc:
        raise StoreUnavailable(f"database: {exc}") from exc
    names = [f"{m.version:04d}_{m.name}" for m in ran]
    emit(args, {"applied": names}, "applied: " + ", ".join(names) if names else "up to date")


async def cmd_account_create(store: Store, args: argparse.Namespace) -> None:
    """Create an account."""
    name = args.name.strip()
    if not name or name.isdigit():
        raise UsageError("account name must not be empty or all digits (digits mean an id)")
    account = await store.create_account(name, args.credits)
    emit(args, as_dict(account), f"account {account.name} (id {account.id}) with {account.credits} credits")


async def cmd_account_show(store: Store, args: argparse.Namespace) -> None:
    """Show one account with its senders and keys."""
    account = await store.find_account(args.account)
    senders = await store.list_senders(account.id)
    keys_ = await store.list_keys(account.id)
    data = as_dict(account) | {"senders": [as_dict(s) for s in senders],
                               "keys": [as_dict(k) for k in keys_]}
    lines = [f"account {account.name} (id {account.id}): {account.credits} credits"]
    lines += [f"  sender {s.pattern} (daily cap {s.daily_cap if s.daily_cap is not None else 'default'})"
              for s in senders]
    lines += [f"  key {k.id} {k.name!r} {'enabled' if k.enabled else 'DISABLED'}" for k in keys_]
    emit(args, data, "\n".join(lines))


async def cmd_account_list(store: Store, args: argparse.Namespace) -> None:
    """List accounts."""
    accounts = await store.list_accounts()
    emit(args, [as_dict(a) for a in accounts],
          "\n".join(f"{a.id}\t{a.name}\t{a.credits}" for a in accounts) or "no accounts")


async def cmd_credits_add(store: Store, args: argparse.Namespace) -> None:
    """Top up an account."""
    account = await store.find_account(args.account)
    balance = await store.add_credits(account.id, args.amount)
    emit(args, {"id": account.id, "name": account.name, "credits": balance},
          f"account {account.name}: {balance} credits")


async def cmd_sender_add(store: Store, args: argparse.Namespace) -> None:
    """Authorize a sender address or domain."""
    pattern = args.address.strip().lower()
    if not is_valid_sender_pattern(pattern):
        raise UsageError(f"not an email address or domain: {args.address!r}")
    account = await store.find_account(args.account)
    rule = await store.add_sender(account.id, pattern, args.daily_cap)
    cap = rule.daily_cap if rule.daily_cap is not None else "default"
    emit(args, {"id": account.id, "account": account.name} | as_dict(rule),
          f"account {account.name}: sender {rule.pattern} authorized (daily cap {cap})")


async def _new_key(store: Store, secret_key: bytes, account_id: int, name: str,
                   rate: int | None) -> tuple[str, str]:
    key_id, secret = keys.new_key_id(), keys.new_secret()
    await store.create_key(key_id, account_id, keys.digest(secret_key, secret), name, rate)
    return key_id, keys.format_key(key_id, secret)


async def cmd_key_create(store: Store, args: argparse.Namespace) -> None:
    """Create a key and print it once."""
    account = await store.find_account(args.account)
    key_id, full = await _new_key(store, args.secret_key, account.id, args.name, args.rate)
    emit(args, {"id": key_id, "key": full, "account_id": account.id, "name": args.name,
                 "calls_per_minute": args.rate},
          f"key {key_id} for account {account.name}:\n{full}\n(shown once: store it now)")


async def cmd_key_toggle(store: Store, args: argparse.Namespace) -> None:
    """Enable or disable a key."""
    info = await store.set_key_enabled(args.key_id, args.enable)
    emit(args, as_dict(info), f"key {info.id} {'enabled' if info.enabled else 'disabled'}")


async def cmd_key_rotate(store: Store, args: argparse.Namespace) -> None:
    """Give a key a new secret; the old one stops working at once."""
    secret = keys.new_secret()
    info = await store.rotate_key(args.key_id, keys.digest(args.secret_key, secret))
    full = keys.format_key(info.id, secret)
    emit(args, as_dict(info) | {"key": full},
          f"key {info.id} rotated:\n{full}\n(shown once: the old secret no longer works)")


async def cmd_logs(store: Store, args: argparse.Namespace) -> None:
    """Show message log rows, newest first."""
    account_id = (await store.find_account(args.account)).id if args.account else None
    rows = await store.logs(account_id=account_id, status=args.status, channel=args.channel,
                            limit=args.limit, tags=dict(args.tag) if args.tag else None)
    text = "\n".join(
        f"{r['created_at']:%Y-%m-%d %H:%M:%S} {r['id']} {r['channel']:4} {r['status']:7} "
        f"{r['sender']} rcpt={r['recipient_count']} charged={r['credits_charged']} "
        f"refunded={r['credits_refunded']} code={r['failure_code'] or '-'}"
        + (f" tags={r['tags']}" if r.get("tags") else "")
        for r in rows
    )
    emit(args, rows, text or "no messages")


async def cmd_queue(store: Store, args: argparse.Namespace) -> None:
    """List queued messages."""
    rows = await store.queued(args.sender)
    text = "\n".join(f"{r['id']} {r['sender']} rcpt={r['recipient_count']} after {r['deliver_after']} "
                     f"attempts={r['attempts']}" for r in rows)
    emit(args, rows, text or "queue is empty")


async def cmd_queue_release(store: Store, args: argparse.Namespace) -> None:
    """Deliver queued messages now (operator override of the cap), paced like the worker."""
    from relay.queue import QueueWorker, utcnow
    from relay.upstream.factory import make_upstream

    cfg: Config = args.cfg
    released = await store.release(utcnow(), args.sender)
    from relay.dkim.outbound import signing

    upstream = signing(make_upstream(cfg), store, args.secret_key, cfg.dkim)
    try:
        tally = await QueueWorker(store, upstream, cfg.limits, cfg.queue, utcnow, cfg.bounces.domain,
                                  args.secret_key).deliver_due(sender=args.sender)
    finally:
        await upstream.close()
    data = {"released": released, "sent": tally.sent, "failed": tally.failed, "retry_later": tally.retried}
    emit(args, data, f"released {released}: {tally.sent} sent, {tally.failed} failed, "
                      f"{tally.retried} to retry later")


# -- servers ----------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(coro)
    else:
        uvloop.run(coro)


async def cmd_serve(cfg: Config, args: argparse.Namespace) -> None:
    """Run the production server from the config."""
    from relay import malloc
    from relay.server import RelayServer, serve_until_signalled

    malloc.tune()
    async with database(cfg) as store:
        await serve_until_signalled(RelayServer(cfg, store, key_secret(cfg)))


async def _dev_demo(store: Store, secret_key: bytes, keep_key: bool) -> tuple[str, str, int]:
    """Make sure the demo account, sender and key exist; (account, key to print, credits)."""
    try:
        account = await store.find_account(DEV_ACCOUNT)
    except StoreError:
        account = await store.create_account(DEV_ACCOUNT, 1000)
    await store.add_sender(account.id, DEV_SENDER_DOMAIN, None)
    demo_keys = [k for k in await store.list_keys(account.id) if k.name == DEV_KEY_NAME]
    if not demo_keys:
        _, full = await _new_key(store, secret_key, account.id, DEV_KEY_NAME, None)
    elif keep_key:
        full = f"(kept: key id {demo_keys[0].id}, printed on an earlier run)"
    else:
        secret = keys.new_secret()
        await store.rotate_key(demo_keys[0].id, keys.digest(secret_key, secret))
        full = keys.format_key(demo_keys[0].id, secret)
    return account.name, full, await store.balance(account.id)


async def cmd_dev(cfg: Config, args: argparse.Namespace) -> None:
    """Everything local: embedded PostgreSQL, Maildir upstream, demo account and key."""
    from relay import malloc
    from relay.dashboard.dev import demo_login
    from relay.server import RelayServer, serve_until_signalled

    malloc.tune()
    cfg = devmode.dev_config(cfg, args.data_dir, devmode.explicit_keys(getattr(args, "config", None), os.environ))
    secret_key = key_secret(cfg)
    postgres: list[str] = []
    async with database(cfg, on_embedded=lambda pg: postgres.append(
            f"{pg.describe()}; log {pg.log_path}")) as store:
        name, full, credits = await _dev_demo(store, secret_key, args.keep_key)
        login = await demo_login(store, name)
        server = RelayServer(cfg, store, secret_key)

        def ready() -> None:
            print(devmode.banner(cfg, server.listening, " ".join(postgres), name, credits, full, login), flush=True)

        await serve_until_signalled(server, ready)


# -- argument parsing -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"relay: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML config (or RELAY_CONFIG)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document")
    parser = _Parser(prog="relay", parents=[common], description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def leaf(group: Any, name: str, handler: Callable[..., Awaitable[None]], help_: str,
             needs_store: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler, needs_store=needs_store)
        return p

    p = leaf(sub, "dev", cmd_dev, "everything local: embedded PostgreSQL, Maildir upstream, demo key",
             needs_store=False)
    p.add_argument("--data-dir", help="data folder (default: server.data_dir, ./relay-data)")
    p.add_argument("--keep-key", action="store_true", help="do not rotate the demo key")
    leaf(sub, "serve", cmd_serve, "run the server (SMTP) from the config", needs_store=False)
    leaf(sub, "migrate", cmd_migrate, "apply database migrations", needs_store=False)

    account = sub.add_parser("account", help="manage accounts").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    p = leaf(account, "create", cmd_account_create, "create an account")
    p.add_argument("name")
    p.add_argument("--credits", type=_non_negative("--credits"), default=0)
    leaf(account, "show", cmd_account_show, "show an account").add_argument("account")
    leaf(account, "list", cmd_account_list, "list accounts")

    credits = sub.add_parser("credits", help="manage credits").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    p = leaf(credits, "add", cmd_credits_add, "add credits to an account")
    p.add_argument("account")
    p.add_argument("amount", type=_positive("N"))

    sender = sub.add_parser("sender", help="manage authorized senders").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    p = leaf(sender, "add", cmd_sender_add, "authorize an address or a whole domain")
    p.add_argument("account")
    p.add_argument("address")
    p.add_argument("--daily-cap", type=_non_negative("--daily-cap"), default=None)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    p = leaf(key, "create", cmd_key_create, "create a key (printed once)")
    p.add_argument("account")
    p.add_argument("--name", default="")
    p.add_argument("--rate", type=_positive("--rate"), default=None, help="calls per minute")
    for verb, enable in (("disable", False), ("enable", True)):
        p = leaf(key, verb, cmd_key_toggle, f"{verb} a key")
        p.add_argument("key_id")
        p.set_defaults(enable=enable)
    leaf(key, "rotate", cmd_key_rotate, "new secret for a key (printed once)").add_argument("key_id")

    p = leaf(sub, "logs", cmd_logs, "message log, newest first")
    p.add_argument("--account")
    p.add_argument("--status", choices=["sending", "sent", "queued", "failed", "suppressed"])
    p.add_argument("--channel", choices=["api", "smtp"])
    p.add_argument("--limit", type=_positive("--limit"), default=50)
    p.add_argument("--tag", type=relay_tags.cli_tag, action="append", metavar="NAME=VALUE",
                   help="only messages with this tag (repeat: all of them)")
    p = leaf(sub, "queue", cmd_queue, "list queued messages (or: queue release)")
    p.add_argument("--sender")
    queue = p.add_subparsers(dest="action", required=False, parser_class=_Parser)
    p = leaf(queue, "release", cmd_queue_release, "deliver queued messages now (operator override of the cap)")
    p.add_argument("--sender", help="only this sender address")
    for feature in commands.MODULES:
        feature.register(sub, leaf)
    return parser


async def _with_store(cfg: Config, args: argparse.Namespace) -> None:
    args.secret_key = key_secret(cfg)
    args.cfg = cfg
    async with database(cfg, pool_size=2) as store:
        await args.handler(store, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `relay` console script."""
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"relay: config: {exc}", file=sys.stderr)
        return 2
    try:
        if args.needs_store:
            _run(_with_store(cfg, args))
        else:
            _run(args.handler(cfg, args))
    except RelayError as exc:  # every error relay raises on purpose is worded for the user
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
