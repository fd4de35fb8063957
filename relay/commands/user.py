"""`relay user add|passwd|remove|list`: the people who log in to the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from typing import Any

from relay.commands.output import emit
from relay.dashboard import passwords
from relay.errors import UsageError
from relay.store.store import Store


def read_password(args: argparse.Namespace) -> str:
    """The new password: one line of stdin with --password-stdin, else asked twice at a prompt."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ")
    if problem := passwords.password_problem(password):
        raise UsageError(problem)
    return password


async def cmd_user_add(store: Store, args: argparse.Namespace) -> None:
    """Add a dashboard user to an account."""
    account = await store.find_account(args.account)
    email = args.email.strip().lower()
    if "@" not in email or any(c.isspace() for c in email):
        raise UsageError(f"not an email address: {args.email!r}")
    hashed = await asyncio.to_thread(passwords.hash_password, read_password(args))
    user = await store.add_user(account.id, email, hashed, args.operator)
    emit(args, {"email": user.email, "account": account.name, "operator": user.operator},
          f"user {user.email} added to account {account.name}"
          + (" (operator: sees every account)" if user.operator else ""))


async def cmd_user_passwd(store: Store, args: argparse.Namespace) -> None:
    """Set a user's password (their sessions end)."""
    hashed = await asyncio.to_thread(passwords.hash_password, read_password(args))
    await store.set_password(args.email, hashed)
    emit(args, {"email": args.email.lower(), "password": "changed"},
          f"password of {args.email.lower()} changed; their sessions have ended")


async def cmd_user_remove(store: Store, args: argparse.Namespace) -> None:
    """Remove a user."""
    await store.remove_user(args.email)
    emit(args, {"email": args.email.lower(), "removed": True}, f"user {args.email.lower()} removed")


async def cmd_user_list(store: Store, args: argparse.Namespace) -> None:
    """List users (of one account, or all)."""
    account_id = (await store.find_account(args.account)).id if args.account else None
    users = await store.list_users(account_id)
    emit(args, [{"email": u.email, "account": u.account_name, "operator": u.operator,
                  "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None} for u in users],
          "\n".join(f"{u.email}\t{u.account_name}{' operator' if u.operator else ''}" for u in users)
          or "no users")


def register(sub: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `relay user ...`."""
    user = sub.add_parser("user", help="manage dashboard users").add_subparsers(dest="action", required=True)
    p = leaf(user, "add", cmd_user_add, "add a dashboard user to an account (asks for a password)")
    p.add_argument("account")
    p.add_argument("email")
    p.add_argument("--operator", action="store_true", help="may see and switch to every account")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = leaf(user, "passwd", cmd_user_passwd, "set a user's password (asks for it)")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    leaf(user, "remove", cmd_user_remove, "remove a dashboard user").add_argument("email")
    leaf(user, "list", cmd_user_list, "list dashboard users").add_argument("--account")
