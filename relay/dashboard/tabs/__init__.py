"""The dashboard's tabs: every module in this package with a TAB is one, in TAB.order.

Adding a tab is adding a module here: `TAB = Tab(slug, label, order, routes, available)`, where
routes(dash) returns its Starlette routes (handlers wrapped by web.page) and available(store)
says whether its feature exists in this build (a tab whose feature has not landed stays hidden).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.routing import Route

if TYPE_CHECKING:
    from relay.dashboard.web import Dash
    from relay.store.store import Store


def always(store: Store) -> bool:
    """A tab of a feature that is always there."""
    return True


@dataclass(frozen=True)
class Tab:
    """One tab: its path (/<slug>), its label in the navigation, its place, its routes."""

    slug: str
    label: str
    order: int
    routes: Callable[[Dash], list[Route]]
    available: Callable[[Store], bool] = always


def discover() -> list[Tab]:
    """Every tab module's TAB, in order."""
    found: list[Tab] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        tab = getattr(module, "TAB", None)
        if isinstance(tab, Tab):
            found.append(tab)
    return sorted(found, key=lambda t: t.order)
