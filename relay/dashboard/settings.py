"""The [dashboard] config section (kept here, beside the feature; relay/config.py lists it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The web dashboard's listener, sessions and login throttling."""

    listen: str = ""  # host:port; empty: no dashboard (`relay dev` turns it on, on loopback)
    tls_cert: str = ""
    tls_key: str = ""
    secure_cookies: bool = False  # mark cookies Secure without TLS here (HTTPS terminated by a proxy in front)
    session_hours: float = 12.0
    login_window_seconds: float = 900.0  # failed logins are counted over this window
    login_failures_per_user: int = 5  # then that user's logins are refused until the window passes
    login_failures_per_address: int = 20  # likewise for one client address, whatever the user


def validate(cfg: DashboardConfig) -> list[tuple[str, str]]:
    """Problems as (key, message); the caller words them as ConfigErrors."""
    problems: list[tuple[str, str]] = []
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        problems.append(("dashboard.tls_cert", "tls_cert and tls_key must be set together"))
    for key, value in (("session_hours", cfg.session_hours), ("login_window_seconds", cfg.login_window_seconds),
                       ("login_failures_per_user", cfg.login_failures_per_user),
                       ("login_failures_per_address", cfg.login_failures_per_address)):
        if value <= 0:
            problems.append((f"dashboard.{key}", f"must be greater than 0, got {value!r}"))
    if cfg.login_window_seconds > 86400:  # failure counts older than a day are swept (store/users.py)
        problems.append(("dashboard.login_window_seconds", f"must be at most 86400, got {cfg.login_window_seconds!r}"))
    return problems
