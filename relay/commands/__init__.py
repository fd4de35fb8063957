"""Feature commands of the `relay` CLI: one module per feature, each with register(sub, leaf).

register(sub, leaf) adds the feature's subcommands: `sub` is the top-level subparsers object,
`leaf(group, name, handler, help_, needs_store=True)` makes one command whose handler is
`async handler(store, args)` (or `(cfg, args)` when needs_store=False); `args.cfg` and
`args.secret_key` are set for store commands. relay/cli.py registers every module in MODULES.
"""

from __future__ import annotations

from types import ModuleType

from relay.commands import domain, events, route, user

MODULES: tuple[ModuleType, ...] = (events, route, domain, user)
