"""The dashboard's tabs: every module in this package with a TAB is one, in TAB.order.

Adding a tab is adding a module here: `TAB = Tab(slug, label, order, routes)`, where routes(dash)
returns its Starlette routes (handlers wrapped by web.page).
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


@dataclass(frozen=True)
class Tab:
    """One tab: its path (/<slug>), its label in the navigation, its place, its routes."""

    slug: str
    label: str
    order: int
    routes: Callable[[Dash], list[Route]]


def discover() -> list[Tab]:
    """Every tab module's TAB, in order."""
    found: list[Tab] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        tab = getattr(module, "TAB", None)
        if isinstance(tab, Tab):
            found.append(tab)
    return sorted(found, key=lambda t: t.order)
