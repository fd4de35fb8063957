"""Domains tab: the account's sending domains, their DKIM selectors, the DNS records to publish, a DNS
check; an operator adds domains (relay/dkim does the work, as for `relay domain`)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.dashboard.tabs import Tab
from relay.dashboard.web import Dash, View, page
from relay.dkim import service
from relay.dkim.dnscheck import DnsUnavailable, Finding
from relay.dkim.model import SendingDomain
from relay.errors import StoreError, UsageError


def routes(dash: Dash) -> list[Route]:
    """GET/POST /domains, GET /domains/{domain}, POST /domains/{domain}/verify."""
    store = dash.store

    async def listing(view: View, status: int = 200, errors: dict[str, str] | None = None,
                      values: dict[str, str] | None = None) -> Response:
        return view.render("domains.html", status, tab="domains", domains=await store.list_domains(view.account.id),
                           errors=errors or {}, values=values or {})

    async def own(view: View) -> SendingDomain:
        try:
            found = await store.find_domain(str(view.request.path_params["domain"]).lower())
        except StoreError:
            found = None
        if found is None or found.account_id != view.account.id:
            raise HTTPException(404, "No such sending domain in this account.")
        return found

    def detail(view: View, domain: SendingDomain, status: int = 200, findings: tuple[Finding, ...] = (),
               error: str = "") -> Response:
        records = service.records_for(dash.config, domain) if dash.config is not None else []
        return view.render("domain.html", status, tab="domains", d=domain, records=records, findings=findings,
                           error=error)

    @page(dash)
    async def index(view: View) -> Response:
        return await listing(view)

    @page(dash)
    async def add(view: View) -> Response:
        if not view.session.user.operator:
            raise HTTPException(403, "Only an operator can add sending domains.")
        if dash.config is None:
            raise HTTPException(503, "This dashboard was started without the server's configuration.")
        try:
            domain = await service.add(store, dash.config, dash.key_secret, view.account.id,
                                       view.form.get("domain", ""))
        except (UsageError, StoreError) as exc:
            return await listing(view, 400, {"domain": f"{str(exc)[:1].upper()}{str(exc)[1:]}."}, view.form)
        return RedirectResponse(f"/domains/{domain.domain}", status_code=303)

    @page(dash)
    async def show(view: View) -> Response:
        return detail(view, await own(view))

    @page(dash)
    async def verify(view: View) -> Response:
        domain = await own(view)
        if dash.config is None:
            raise HTTPException(503, "This dashboard was started without the server's configuration.")
        try:
            checked = await service.verify(store, dash.config, domain)
        except DnsUnavailable as exc:
            return detail(view, domain, 503, error=f"The DNS check could not be made: {exc}. Try again later.")
        return detail(view, checked.domain, findings=checked.findings)

    return [
        Route("/domains", index, methods=["GET"]),
        Route("/domains", add, methods=["POST"]),
        Route("/domains/{domain}", show, methods=["GET"]),
        Route("/domains/{domain}/verify", verify, methods=["POST"]),
    ]


TAB = Tab("domains", "Domains", 45, routes)
