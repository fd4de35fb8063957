"""`/v1/domains` over the HTTPS API: an account's sending domains, with its own API key.

GET /v1/domains, POST /v1/domains, GET /v1/domains/{domain} (with the records to publish),
POST /v1/domains/{domain}/verify, DELETE /v1/domains/{domain}. A key sees only its account's
domains (another account's is 404). `--trust` stays an operator's CLI option: over the API a domain
is signed for once its record is seen in DNS, and an account may add only a domain one of its
authorized senders is in (so no account can claim another's domain). The OpenAPI fragment is
PATHS and SCHEMAS below.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.dkim import service
from relay.dkim.dnscheck import DnsUnavailable
from relay.dkim.outbound import SigningUpstream
from relay.domain import Principal
from relay.errors import StoreError, StoreUnavailable, UsageError
from relay.openapi_parts import BEARER, KEY_FAILURES, as_json, failure, ref

if TYPE_CHECKING:
    from relay.channels.http import Api

_MAX_BODY = 4096


def routes(api: Api) -> list[Route]:
    """The /v1/domains routes over api (none when the API runs without the server's parts)."""
    context = api.context
    if context is None:
        return []
    from relay.channels.http import failure  # the channel imports this module's routes: import it late

    cfg, store, key_secret = context.cfg, context.store, context.key_secret

    def changed() -> None:
        """This process signs with the change from the next message on (other instances: within the TTL)."""
        if isinstance(api.pipeline.upstream, SigningUpstream):
            api.pipeline.upstream.ring.invalidate()

    def guarded(work: Callable[[Principal, Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """The key check of every API route, then the project's errors as responses."""
        async def run(request: Request) -> Response:
            principal = await api.principal(request)
            if not isinstance(principal, Principal):
                return principal
            try:
                return await work(principal, request)
            except UsageError as exc:
                return failure(400, str(exc), "INVALID")
            except (StoreUnavailable, DnsUnavailable) as exc:
                return failure(503, f"temporary failure, try again later ({_first_line(exc)})", "TEMPORARY",
                               {"Retry-After": "5"})
        return run

    async def owned(principal: Principal, request: Request) -> Any:
        """The account's domain named in the path, or None (another account's is not found either)."""
        try:
            name = service.normalize_domain(request.path_params["domain"])
            domain = await store.find_domain(name)
        except (UsageError, StoreError):
            return None
        return domain if domain.account_id == principal.account_id else None

    def not_found() -> Response:
        return failure(404, "no such sending domain", "NOT_FOUND")

    async def list_domains(principal: Principal, request: Request) -> Response:
        found = await store.list_domains(principal.account_id)
        return JSONResponse({"ok": True, "domains": [service.domain_json(d) for d in found]})

    async def add_domain(principal: Principal, request: Request) -> Response:
        body = await api.small_body(request, _MAX_BODY)  # never buffered past _MAX_BODY
        if isinstance(body, Response):
            return body
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("domain"), str):
            raise UsageError('expected a JSON object with "domain" (and optional "selector", "ed25519")')
        selector, ed25519 = doc.get("selector"), doc.get("ed25519", False)
        if (selector is not None and not isinstance(selector, str)) or not isinstance(ed25519, bool):
            raise UsageError('"selector" must be a string and "ed25519" true or false')
        name = service.normalize_domain(doc["domain"])
        if not _may_send_from(principal, name):  # no claiming a domain the account cannot send from
            raise UsageError(f"this account is not authorized to send from {name} or an address in it")
        try:
            domain = await service.add(store, cfg, key_secret, principal.account_id, doc["domain"],
                                       selector=selector, ed25519=ed25519)
        except StoreError as exc:
            return failure(409, str(exc), "CONFLICT")
        return JSONResponse({"ok": True, **service.domain_json(domain, cfg)}, status_code=201)

    async def show_domain(principal: Principal, request: Request) -> Response:
        domain = await owned(principal, request)
        if domain is None:
            return not_found()
        return JSONResponse({"ok": True, **service.domain_json(domain, cfg)})

    async def verify_domain(principal: Principal, request: Request) -> Response:
        domain = await owned(principal, request)
        if domain is None:
            return not_found()
        checked = await service.verify(store, cfg, domain)
        changed()
        return JSONResponse({"ok": True, **service.domain_json(checked.domain),
                             "findings": [f.as_json() for f in checked.findings]})

    async def remove_domain(principal: Principal, request: Request) -> Response:
        domain = await owned(principal, request)
        if domain is None:
            return not_found()
        try:
            await store.remove_domain(domain.domain)
        except StoreError:
            return not_found()  # removed meanwhile
        changed()
        return JSONResponse({"ok": True, "domain": domain.domain, "removed": True})

    return [
        Route("/v1/domains", guarded(list_domains), methods=["GET"]),
        Route("/v1/domains", guarded(add_domain), methods=["POST"]),
        Route("/v1/domains/{domain}", guarded(show_domain), methods=["GET"]),
        Route("/v1/domains/{domain}", guarded(remove_domain), methods=["DELETE"]),
        Route("/v1/domains/{domain}/verify", guarded(verify_domain), methods=["POST"]),
    ]


def _may_send_from(principal: Principal, domain: str) -> bool:
    """Whether one of the account's authorized senders lies in domain (or one of its subdomains)."""
    for rule in principal.senders:
        sender_domain = rule.pattern.rpartition("@")[2]
        if sender_domain == domain or sender_domain.endswith("." + domain):
            return True
    return False


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# -- the OpenAPI fragment (merged into relay/openapi.py's DOCUMENT) ---------------------------------

CODES = ["CONFLICT"]  # failure codes only these routes use (added to the Failure schema)
_AUTH_FAILURES = {
    **KEY_FAILURES,
    "503": failure("The database (or, for verify, DNS) did not answer.", "TEMPORARY", retry_after=True),
}
_DOMAIN_PARAMETER = [{"name": "domain", "in": "path", "required": True, "description": "The domain name.",
                      "schema": {"type": "string"}}]
_NOT_FOUND = {"404": failure("Not one of this account's sending domains.", "NOT_FOUND")}
_SECURITY = BEARER

PATHS: dict[str, Any] = {
    "/v1/domains": {
        "get": {
            "operationId": "listDomains", "summary": "The account's sending domains.", "security": _SECURITY,
            "responses": {"200": {"description": "The domains.", "content": as_json(ref("schemas", "DomainList"))},
                          **_AUTH_FAILURES},
        },
        "post": {
            "operationId": "addDomain", "security": _SECURITY,
            "summary": "Add a sending domain: a DKIM key (RSA-2048, and Ed25519 when asked) and the records to "
                       "publish. Mail is signed for it once `verify` sees the DKIM record.",
            "requestBody": {"required": True, "content": as_json(ref("schemas", "AddDomain"))},
            "responses": {
                "201": {"description": "Added.", "content": as_json(ref("schemas", "DomainWithRecords"))},
                "400": failure("Not a JSON object with a valid domain (and selector), or a domain none of the "
                                "account's authorized senders is in.", "INVALID"),
                "409": failure("The domain is already a sending domain.", "CONFLICT"),
                "413": failure("The body is over 4 KB.", "TOO_LARGE"),
                **_AUTH_FAILURES,
            },
        },
    },
    "/v1/domains/{domain}": {
        "get": {
            "operationId": "getDomain", "summary": "One sending domain, its keys and the records to publish.",
            "security": _SECURITY, "parameters": _DOMAIN_PARAMETER,
            "responses": {"200": {"description": "The domain.",
                                  "content": as_json(ref("schemas", "DomainWithRecords"))},
                          **_NOT_FOUND, **_AUTH_FAILURES},
        },
        "delete": {
            "operationId": "removeDomain", "summary": "Remove a sending domain; its mail is no longer signed.",
            "security": _SECURITY, "parameters": _DOMAIN_PARAMETER,
            "responses": {"200": {"description": "Removed.", "content": as_json(ref("schemas", "DomainRemoved"))},
                          **_NOT_FOUND, **_AUTH_FAILURES},
        },
    },
    "/v1/domains/{domain}/verify": {
        "post": {
            "operationId": "verifyDomain", "security": _SECURITY, "parameters": _DOMAIN_PARAMETER,
            "summary": "Look the domain's records up in DNS; a selector whose key is published becomes verified "
                       "(and, after a rotation, takes over). SPF and DMARC are reported as advice.",
            "responses": {"200": {"description": "What was found.", "content": as_json(ref("schemas", "Verified"))},
                          **_NOT_FOUND, **_AUTH_FAILURES},
        },
    },
}

_DATE = {"type": ["string", "null"], "format": "date-time"}
SCHEMAS: dict[str, Any] = {
    "AddDomain": {
        "type": "object", "required": ["domain"], "additionalProperties": False,
        "properties": {"domain": {"type": "string"}, "selector": {"type": "string"},
                       "ed25519": {"type": "boolean", "description": "Also an Ed25519 key (RFC 8463)."}},
    },
    "DkimKey": {
        "type": "object",
        "required": ["selector", "algorithm", "status", "active", "publicKey", "verifiedAt", "checkedAt",
                     "checkDetail", "createdAt"],
        "properties": {
            "selector": {"type": "string"}, "algorithm": {"enum": ["rsa-sha256", "ed25519-sha256"]},
            "status": {"enum": ["pending", "verified"]}, "active": {"type": "boolean"},
            "publicKey": {"type": "string", "description": "The p= value (never the private key)."},
            "verifiedAt": _DATE, "checkedAt": _DATE, "checkDetail": {"type": ["string", "null"]},
            "createdAt": {"type": "string", "format": "date-time"},
        },
    },
    "Domain": {
        "type": "object",
        "required": ["domain", "accountId", "status", "trusted", "signing", "createdAt", "keys"],
        "properties": {
            "domain": {"type": "string"}, "accountId": {"type": "integer"},
            "status": {"enum": ["pending", "verified"]}, "trusted": {"type": "boolean"},
            "signing": {"type": "boolean", "description": "Mail from this domain is DKIM-signed now."},
            "createdAt": {"type": "string", "format": "date-time"},
            "keys": {"type": "array", "items": ref("schemas", "DkimKey")},
        },
    },
    "DnsRecord": {
        "type": "object", "required": ["purpose", "name", "type", "value"],
        "properties": {
            "purpose": {"enum": ["dkim", "spf", "dmarc", "bounce-mx", "bounce-spf"]},
            "name": {"type": "string"}, "type": {"enum": ["TXT", "MX"]}, "value": {"type": "string"},
            "strings": {"type": "array", "items": {"type": "string", "maxLength": 255},
                        "description": "A TXT value cut into DNS character-strings."},
        },
    },
    "DomainList": {
        "type": "object", "required": ["ok", "domains"],
        "properties": {"ok": {"const": True}, "domains": {"type": "array", "items": ref("schemas", "Domain")}},
    },
    "DomainWithRecords": {
        "allOf": [ref("schemas", "Domain"), {
            "type": "object", "required": ["ok", "records"],
            "properties": {"ok": {"const": True}, "records": {"type": "array", "items": ref("schemas", "DnsRecord")}},
        }],
    },
    "Verified": {
        "allOf": [ref("schemas", "Domain"), {
            "type": "object", "required": ["ok", "findings"],
            "properties": {"ok": {"const": True}, "findings": {"type": "array", "items": {
                "type": "object", "required": ["purpose", "name", "ok", "detail", "found"],
                "properties": {"purpose": {"enum": ["dkim", "spf", "dmarc"]}, "name": {"type": "string"},
                               "ok": {"type": "boolean"}, "detail": {"type": "string"},
                               "found": {"type": "array", "items": {"type": "string"}}}}}},
        }],
    },
    "DomainRemoved": {
        "type": "object", "required": ["ok", "domain", "removed"],
        "properties": {"ok": {"const": True}, "domain": {"type": "string"}, "removed": {"const": True}},
    },
}
