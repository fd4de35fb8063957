"""Logging in and out: password check, throttling of failed logins, session cookies, account switch."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.dashboard import passwords
from relay.dashboard.web import SESSION_COOKIE, Dash, View, new_token, page, read_form, same

log = logging.getLogger(__name__)

LOGIN_CSRF_COOKIE = "relay_login_csrf"


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never //host or a full URL)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _throttle_scopes(request: Request, email: str) -> list[str]:
    address = request.client.host if request.client else "unknown"
    return [f"addr:{address}", f"user:{email}"]


def routes(dash: Dash) -> list[Route]:
    """/login, /logout and /switch (an operator choosing the account in view)."""
    cfg = dash.cfg
    window = timedelta(seconds=cfg.login_window_seconds)

    def login_page(request: Request, status: int = 200, error: str = "", email: str = "",
                   csrf: str | None = None) -> Response:
        csrf = csrf or new_token()
        response = dash.render(request, "login.html", status, csrf=csrf, error=error, email=email,
                               next=safe_next(request.query_params.get("next")))
        # a login form's token is checked against this cookie (double submit): there is no session yet
        response.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="lax", secure=dash.secure_cookies,
                            path="/login")
        return response

    async def login_get(request: Request) -> Response:
        return login_page(request)

    async def login_post(request: Request) -> Response:
        form = await read_form(request)
        if not same(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            raise HTTPException(403, "This form is missing its security token (CSRF): reload the page and try again.")
        email = form.get("email", "").strip().lower()
        password = form.get("password", "")
        scopes = _throttle_scopes(request, email)
        # counted before the check, taken back unless it fails: parallel guesses see each other,
        # so no more than the limit of them ever reach the password check
        address_count, user_count = await dash.store.count_login_attempt(scopes, window)
        if address_count > cfg.login_failures_per_address or user_count > cfg.login_failures_per_user:
            await dash.store.uncount_login_attempt(scopes)  # refused unchecked: not a failed login
            minutes = max(1, round(cfg.login_window_seconds / 60))
            response = login_page(request, 429, email=email,
                                  error=f"Too many failed logins. Wait up to {minutes} minutes and try again.")
            response.headers["Retry-After"] = str(int(cfg.login_window_seconds))
            return response
        user = await dash.store.find_user(email) if email else None
        # argon2 is CPU work of a fifth of a second: off the event loop, so other requests keep flowing
        ok = await asyncio.to_thread(passwords.verify_password, password, user.password_hash if user else None)
        if user is None or not ok:
            log.info("dashboard: failed login for %r from %s", email, scopes[0])  # the attempt stays counted
            return login_page(request, 401, email=email, error="Wrong email or password.")
        if passwords.needs_rehash(user.password_hash):
            rehashed = await asyncio.to_thread(passwords.hash_password, password)
            await dash.store.set_password(user.email, rehashed, end_sessions=False)
        await dash.store.uncount_login_attempt(scopes[:1])
        await dash.store.clear_login_failures(scopes[1])
        token = new_token()  # a fresh token at every login: no session fixation
        await dash.store.open_session(user, token, new_token(), timedelta(hours=cfg.session_hours))
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=int(cfg.session_hours * 3600), httponly=True,
                            samesite="lax", secure=dash.secure_cookies, path="/")
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @page(dash)
    async def logout(view: View) -> Response:
        await dash.store.close_session(view.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=dash.secure_cookies)
        return response

    @page(dash)
    async def switch(view: View) -> Response:
        if not view.session.user.operator:
            raise HTTPException(403, "Only an operator can switch accounts.")
        raw = view.form.get("account_id", "")
        if not raw.isdigit() or not await dash.store.switch_account(view.token, int(raw)):
            raise HTTPException(404, "No such account.")
        return RedirectResponse(safe_next(view.form.get("next")), status_code=303)

    return [
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/switch", switch, methods=["POST"]),
    ]
