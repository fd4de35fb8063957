"""The dashboard's shell: templates, the session and CSRF gate every tab's handlers pass through."""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, quote

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from relay.dashboard.settings import DashboardConfig
from relay.domain import Account
from relay.store.users import Session

if TYPE_CHECKING:
    from relay.config import Config
    from relay.dashboard.tabs import Tab
    from relay.store.store import Store

T = TypeVar("T")

SESSION_COOKIE = "relay_session"
MAX_FORM_BYTES = 64 * 1024

# Sent with every page: no framing, nothing loaded from elsewhere, no inline scripts.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Dash:
    """What every handler may use: the store, the settings, the server's key secret, the tabs."""

    store: Store
    cfg: DashboardConfig
    key_secret: bytes
    https: bool
    tabs: list[Tab] = field(default_factory=list)
    config: Config | None = None  # the whole server config, for tabs that need more than [dashboard]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    memo: dict[tuple[object, ...], tuple[float, object]] = field(default_factory=dict)  # see remember()
    env: jinja2.Environment = field(default_factory=lambda: jinja2.Environment(
        loader=jinja2.PackageLoader("relay.dashboard", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True))

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure when the dashboard is served over HTTPS (here or by a proxy in front)."""
        return self.https or self.cfg.secure_cookies

    async def remember(self, key: tuple[object, ...], seconds: float, compute: Callable[[], Awaitable[T]]) -> T:
        """compute()'s result, reused for seconds under key (for aggregates too dear to redo per view)."""
        now = time.monotonic()
        hit = self.memo.get(key)
        if hit is not None and now - hit[0] < seconds:
            return hit[1]  # type: ignore[return-value]  # stored by this method under the same key
        value = await compute()
        if len(self.memo) > 1000:  # one entry per account in view: a bound, not an eviction policy
            self.memo.clear()
        self.memo[key] = (now, value)
        return value

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from a template, with the security headers."""
        html = self.env.get_template(template).render(request=request, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


@dataclass
class View:
    """One logged-in request: the session, the account in view, the visible tabs, the parsed form."""

    request: Request
    dash: Dash
    session: Session
    token: str
    account: Account
    tabs: list[Tab]
    accounts: list[Account]  # an operator's switch list; empty for everyone else
    form: dict[str, str]

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A tab's page inside the shell (header, account switch, tabs, logout)."""
        return self.dash.render(self.request, template, status, view=self, user=self.session.user,
                                account=self.account, csrf=self.session.csrf, **context)


Handler = Callable[[View], Awaitable[Response]]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body as a dict (the first value of each field); 413 past MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
    return {k: v[0] for k, v in parsed.items()}


def new_token() -> str:
    """A random token for a session or a CSRF field."""
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens (a missing one never matches)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def to_login(request: Request) -> RedirectResponse:
    """Send a visitor without a session to the login page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def page(dash: Dash) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a tab handler: a live session is required, and every POST must carry the session's CSRF
    token (403 otherwise); the handler gets a View."""
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE, "")
            session = await dash.store.session(token) if token else None
            form: dict[str, str] = {}
            if request.method == "POST":
                form = await read_form(request)
                if session is None:
                    raise HTTPException(403, "Your session has ended: log in again.")
                if not same(form.get("csrf"), session.csrf):
                    raise HTTPException(403, "This form is missing its security token (CSRF): reload the page "
                                             "and try again.")
            if session is None:
                return to_login(request)
            user = session.user
            account_id = session.account_id if user.operator else user.account_id
            accounts = await dash.store.list_accounts() if user.operator else []
            account = (next((a for a in accounts if a.id == account_id), None)
                       or await dash.store.find_account(str(account_id)))
            return await handler(View(request, dash, session, token, account, dash.tabs, accounts, form))
        return endpoint
    return wrap
