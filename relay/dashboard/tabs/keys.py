"""API Keys tab: create (the key shown once), name, per-key rate, disable, enable, rotate, last used."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay import keys
from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page

MAX_NAME = 100


def parse_rate(raw: str) -> tuple[int | None, str | None]:
    """A per-key rate from a form field: (calls per minute or None for the default, error)."""
    raw = raw.strip()
    if not raw:
        return None, None
    if not raw.isdigit() or not 0 < int(raw) <= 1_000_000:
        return None, "Enter a whole number of calls per minute from 1 to 1000000, or leave it empty for the default."
    return int(raw), None


def routes(dash: Dash) -> list[Route]:
    """GET/POST /keys and the per-key actions."""
    store = dash.store

    async def listing(view: View, status: int = 200, **extra: object) -> Response:
        return view.render("keys.html", status, tab="keys", keys=await store.list_keys(view.account.id),
                           **({"new_key": None, "errors": {}, "values": {}} | extra))

    @page(dash)
    async def index(view: View) -> Response:
        return await listing(view)

    @page(dash)
    async def create(view: View) -> Response:
        name = view.form.get("name", "").strip()
        rate, rate_error = parse_rate(view.form.get("rate", ""))
        errors = {"rate": rate_error} if rate_error else {}
        if len(name) > MAX_NAME:
            errors["name"] = f"Use at most {MAX_NAME} characters."
        if errors:
            return await listing(view, 400, errors=errors, values=view.form)
        key_id, secret = keys.new_key_id(), keys.new_secret()
        await store.create_key(key_id, view.account.id, keys.digest(dash.key_secret, secret), name, rate)
        return await listing(view, new_key=(key_id, keys.format_key(key_id, secret), "created"))

    async def own(view: View) -> str:
        key_id = view.request.path_params["key_id"]
        if await store.account_key(view.account.id, key_id) is None:
            raise HTTPException(404, "No such key in this account.")
        return str(key_id)

    @page(dash)
    async def disable(view: View) -> Response:
        await store.set_key_enabled(await own(view), False)
        return RedirectResponse("/keys", status_code=303)

    @page(dash)
    async def enable(view: View) -> Response:
        await store.set_key_enabled(await own(view), True)
        return RedirectResponse("/keys", status_code=303)

    @page(dash)
    async def rotate(view: View) -> Response:
        key_id, secret = await own(view), keys.new_secret()
        await store.rotate_key(key_id, keys.digest(dash.key_secret, secret))
        return await listing(view, new_key=(key_id, keys.format_key(key_id, secret), "rotated"))

    @page(dash)
    async def rate(view: View) -> Response:
        key_id = await own(view)
        value, error = parse_rate(view.form.get("rate", ""))
        if error:
            return await listing(view, 400, errors={f"rate-{key_id}": error})
        await store.set_key_rate(view.account.id, key_id, value)
        return RedirectResponse("/keys", status_code=303)

    return [
        Route("/keys", index, methods=["GET"]),
        Route("/keys", create, methods=["POST"]),
        Route("/keys/{key_id}/disable", disable, methods=["POST"]),
        Route("/keys/{key_id}/enable", enable, methods=["POST"]),
        Route("/keys/{key_id}/rotate", rotate, methods=["POST"]),
        Route("/keys/{key_id}/rate", rate, methods=["POST"]),
    ]


TAB = Tab("keys", "API Keys", 30, routes)
