"""The dashboard's ASGI application: login routes, the tabs' routes, static files, error pages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.config import Config
from relay.dashboard import auth, tabs
from relay.dashboard.settings import DashboardConfig
from relay.dashboard.web import Dash
from relay.errors import StoreUnavailable
from relay.store.store import Store

log = logging.getLogger(__name__)


def build_app(store: Store, cfg: DashboardConfig, key_secret: bytes, *, https: bool = False,
              config: Config | None = None,
              clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Starlette:
    """The dashboard over one store (https: served over TLS, so cookies are Secure; config: the whole
    server configuration, which some tabs need)."""
    dash = Dash(store, cfg, key_secret, https, tabs.discover(), config, clock)

    async def home(request: Request) -> Response:
        return RedirectResponse(f"/{dash.tabs[0].slug}", status_code=303)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return dash.render(request, "error.html", exc.status_code, code=exc.status_code, detail=exc.detail)

    async def store_down(request: Request, exc: Exception) -> Response:
        log.warning("dashboard: %s %s: %s", request.method, request.url.path, exc)
        return dash.render(request, "error.html", 503, code=503,
                           detail="The database is unavailable right now; try again shortly.")

    routes: list[Route | Mount] = [Route("/", home, methods=["GET"]), *auth.routes(dash)]
    for tab in dash.tabs:
        routes += tab.routes(dash)
    routes.append(Mount("/static", StaticFiles(packages=[("relay.dashboard", "static")]), name="static"))
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, StoreUnavailable: store_down})
