"""relay/openapi.py against the code: a valid OpenAPI 3.1 document that says what the live API does.

The conformance tests drive real responses from a live relay (its own HTTP listener) and check each
against the document: the status is documented for the operation, the body validates against the
documented schema (JSON Schema 2020-12, $ref resolved within the document), documented required
headers are present and valid, and relay's own headers (Retry-After, Idempotent-Replayed, Allow)
appear only where documented. In reverse, every documented status, failure code and header of an
operation is produced at least once, so the document lists nothing that cannot happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from relay.channels.http import HTTP_REPLIES, body_limit
from relay.openapi import DOCUMENT
from tests.conftest import LiveRelay, Tenant, database_unreachable, lose_the_debit_race, relay_config, start_relay
from tests.http_helpers import body_for, raw_http

SMALL = 5000  # limits.max_message_bytes of the relay that produces 413 from the content
_URI = "urn:relay:openapi"
# relay's own response headers: each may appear only where the document declares it
WATCHED_HEADERS = ("retry-after", "idempotent-replayed", "allow")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(*tokens: str) -> str:
    return "".join("/" + _escape(token) for token in tokens)


def _at(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for token in pointer.split("/")[1:]:
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


class Document:
    """An OpenAPI document and JSON Schema validators for the schemas in it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(_URI, resource)

    def resolve(self, pointer: str) -> tuple[dict[str, Any], str]:
        """The object at pointer, following OpenAPI Reference Objects; and its own pointer."""
        node = _at(self.doc, pointer)
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = _at(self.doc, pointer)
        return node, pointer

    def errors(self, pointer: str, instance: Any) -> list[str]:
        """What is wrong with instance against the schema at pointer ([] when it validates)."""
        validator = Draft202012Validator({"$ref": f"{_URI}#{pointer}"}, registry=self.registry,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]

    def operation(self, path: str, method: str) -> dict[str, Any]:
        return self.doc["paths"][path][method]

    def response_pointer(self, path: str, method: str, status: str) -> str:
        return _pointer("paths", path, method, "responses", status)

    def codes(self, pointer: str) -> set[str]:
        """The failure codes a response's schema allows, as narrowed at the response (empty: a success)."""
        response, pointer = self.resolve(pointer)
        found: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                found.update(node.get("properties", {}).get("code", {}).get("enum", []))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        for media in response.get("content", {}).values():
            walk(media["schema"])
        return found

    def headers(self, pointer: str) -> dict[str, tuple[dict[str, Any], str]]:
        """A response's headers, lower-cased, each resolved with its pointer."""
        response, pointer = self.resolve(pointer)
        return {name.lower(): self.resolve(pointer + _pointer("headers", name))
                for name in response.get("headers", {})}


DOC = Document(DOCUMENT)


def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)))


class Conformance:
    """Checks responses against the document and remembers what was produced."""

    def __init__(self, doc: Document = DOC) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str, str]] = set()  # (pointer of the operation, status, code or '')
        self.seen_headers: set[tuple[str, str, str]] = set()

    def check(self, response: httpx.Response, path: str) -> httpx.Response:
        """The response of an operation of the document conforms to it."""
        method = response.request.method.lower()
        assert _template(path).fullmatch(response.request.url.path), (path, response.request.url)
        operation = self.doc.operation(path, method)
        status = str(response.status_code)
        assert status in operation["responses"], (
            f"{method.upper()} {path} answered {status}, documented: {sorted(operation['responses'])}: "
            f"{response.text[:300]}")
        self._conforms(response, self.doc.response_pointer(path, method, status), _pointer("paths", path, method))
        return response

    def check_routing(self, response: httpx.Response, name: str) -> httpx.Response:
        """A routing error conforms to components.responses[name]."""
        self._conforms(response, _pointer("components", "responses", name), _pointer("components", "responses"))
        return response

    def _conforms(self, response: httpx.Response, pointer: str, where: str) -> None:
        spec, resolved = self.doc.resolve(pointer)
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        assert media_type in spec.get("content", {}), (pointer, media_type)
        body = response.json() if media_type == "application/json" else response.text
        errors = self.doc.errors(resolved + _pointer("content", media_type, "schema"), body)
        assert not errors, (pointer, body, errors)
        documented = self.doc.headers(pointer)
        for name, (header, header_pointer) in documented.items():
            value = response.headers.get(name)
            if value is None:
                assert not header.get("required"), f"{pointer}: the required header {name} is missing"
                continue
            self.seen_headers.add((where, str(response.status_code), name))
            if header["schema"].get("type") == "integer":
                assert value.isdigit(), (name, value)
                value = int(value)
            errors = self.doc.errors(header_pointer + "/schema", value)
            assert not errors, (pointer, name, value, errors)
        for name in WATCHED_HEADERS:
            assert name not in response.headers or name in documented, (
                f"{pointer}: the response has {name} ({response.headers[name]}), the document does not say so")
        code = body.get("code", "") if isinstance(body, dict) else ""
        self.seen.add((where, str(response.status_code), code))

    def assert_all_produced(self, path: str, method: str) -> None:
        """Every status, failure code and header the document gives the operation was produced."""
        where = _pointer("paths", path, method)
        for status in self.doc.operation(path, method)["responses"]:
            self._assert_produced(where, self.doc.response_pointer(path, method, status), status)

    def assert_routing_produced(self, name: str, status: str) -> None:
        self._assert_produced(_pointer("components", "responses"), _pointer("components", "responses", name), status)

    def _assert_produced(self, where: str, pointer: str, status: str) -> None:
        produced = {code for w, s, code in self.seen if (w, s) == (where, status)}
        assert produced, f"{pointer}: documented, never produced"
        expected = self.doc.codes(pointer) or {""}
        assert produced == expected, f"{pointer}: codes documented {sorted(expected)}, produced {sorted(produced)}"
        for name in self.doc.headers(pointer):
            assert (where, status, name) in self.seen_headers, f"{pointer}: header {name} never produced"


# -- fixtures and helpers ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _client(live: LiveRelay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}", timeout=15) as client:
        yield client


@pytest.fixture
async def http(relay: LiveRelay) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the relay fixture's own HTTP listener."""
    async with _client(relay) as client:
        yield client


def _auth(tenant: Tenant | str | None, **headers: str) -> dict[str, str]:
    key = tenant.key if isinstance(tenant, Tenant) else tenant
    return headers | ({"Authorization": f"Bearer {key}"} if key is not None else {})


async def send(http: httpx.AsyncClient, tenant: Tenant | str | None, body: Any, **headers: str) -> httpx.Response:
    """POST /v1/send as a tenant (a raw key, or None: no Authorization)."""
    return await http.post("/v1/send", json=body, headers=_auth(tenant, **headers))


async def _until(condition: Any, what: str) -> None:
    for _ in range(250):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def in_flight(live: LiveRelay, task: asyncio.Task[httpx.Response]) -> AsyncIterator[None]:
    """While an admitted send waits for the (delayed) upstream."""
    await _until(lambda: live.store.logs(status="sending"), "a message admitted and on its way upstream")
    yield
    await task


def _request_errors(body: Any) -> list[str]:
    """What the document's request body schema of POST /v1/send finds wrong with body."""
    return DOC.errors(_pointer("paths", "/v1/send", "post", "requestBody", "content", "application/json", "schema"),
                      body)


def _sent(response: httpx.Response, body: dict[str, Any]) -> httpx.Response:
    """A request the server accepted is one the document accepts."""
    assert response.status_code in (200, 202), response.text
    assert not _request_errors(body), (body, _request_errors(body))
    return response


# -- the document itself ---------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1_and_the_validator_notices_breakage() -> None:
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)
    broken = copy.deepcopy(DOCUMENT)
    del broken["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    with pytest.raises(Exception, match="description"):
        validate(broken, cls=OpenAPIV31SpecValidator)
    # every $ref points into the document
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(DOCUMENT))
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        _at(DOCUMENT, ref.removeprefix("#"))


def test_every_outcome_of_the_reply_table_is_documented_for_send_and_nothing_else() -> None:
    documented = {(status, code) for status in DOC.operation("/v1/send", "post")["responses"]
                  for code in DOC.codes(DOC.response_pointer("/v1/send", "post", status))}
    table = {(str(status), outcome.value) for outcome, (status, _) in HTTP_REPLIES.items() if not outcome.accepted}
    assert documented == table
    accepted = {str(status) for outcome, (status, _) in HTTP_REPLIES.items() if outcome.accepted}
    assert accepted == {s for s in DOC.operation("/v1/send", "post")["responses"] if not DOC.codes(
        DOC.response_pointer("/v1/send", "post", s))}


async def test_the_document_is_served_and_lists_exactly_the_routes(relay: LiveRelay, http: httpx.AsyncClient) -> None:
    conformance = Conformance()
    response = conformance.check(await http.get("/v1/openapi.json"), "/v1/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(json.dumps(DOCUMENT))
    validate(response.json(), cls=OpenAPIV31SpecValidator)
    conformance.assert_all_produced("/v1/openapi.json", "get")

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    served = {(shape(route.path), method.lower()) for route in relay.server.channel("http").server.app.routes
              for method in route.methods - {"HEAD"}}  # Starlette answers HEAD on every GET route
    documented = {(shape(path), method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == documented


# -- POST /v1/send ---------------------------------------------------------------------------------


async def test_every_documented_send_response_is_real(relay: LiveRelay, http: httpx.AsyncClient, db_dsn, store,
                                                      peer, pg) -> None:
    c = Conformance()
    peer_handler = relay.peer.handler

    # 200, replayed with Idempotent-Replayed; every field of the request schema in use
    t = await relay.tenant(credits=1000)
    full = body_for(t, **{"from": f"App <{t.sender}>"}, to=["one@dest.test", "Two <two@dest.test>"],
                    cc="copy@dest.test", bcc=["hidden@dest.test"], reply_to=None, html="<p>hi</p>",
                    headers={"X-Campaign": "v" * 900})
    first = _sent(c.check(await send(http, t, full, **{"Idempotency-Key": "order-1"}), "/v1/send"), full)
    replay = c.check(await send(http, t, full, **{"Idempotency-Key": "order-1"}), "/v1/send")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()

    # 409 IDEMPOTENCY_MISMATCH: the same key, another message
    mismatch = c.check(await send(http, t, body_for(t), **{"Idempotency-Key": "order-1"}), "/v1/send")
    assert mismatch.status_code == 409 and "retry-after" not in mismatch.headers

    # 202 queued over the daily cap, and its replay
    capped = await relay.tenant(daily_cap=1, sender="capped@example.com")
    _sent(c.check(await send(http, capped, body_for(capped)), "/v1/send"), body_for(capped))
    queued = _sent(c.check(await send(http, capped, body_for(capped), **{"Idempotency-Key": "q"}), "/v1/send"),
                   body_for(capped))
    assert queued.status_code == 202
    again = c.check(await send(http, capped, body_for(capped), **{"Idempotency-Key": "q"}), "/v1/send")
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"

    # 400: the body, the sender, the Idempotency-Key
    for content in (b"{not json", b"[1]"):
        response = c.check(await http.post("/v1/send", content=content, headers=_auth(t)), "/v1/send")
        assert response.status_code == 400
    assert c.check(await send(http, t, body_for(t, to=[])), "/v1/send").status_code == 400
    assert c.check(await send(http, t, body_for(t, **{"from": "x@elsewhere.test"})), "/v1/send").status_code == 400
    unusable = "k" * 256
    assert DOC.errors("/components/parameters/IdempotencyKey/schema", unusable)
    assert not DOC.errors("/components/parameters/IdempotencyKey/schema", "k" * 255)
    response = c.check(await send(http, t, body_for(t), **{"Idempotency-Key": unusable}), "/v1/send")
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]

    # 401 without a key and with an unknown one; 403 with a disabled one
    assert c.check(await send(http, None, body_for(t)), "/v1/send").status_code == 401
    assert c.check(await send(http, "rk_000000000000_nope", body_for(t)), "/v1/send").status_code == 401
    disabled = await relay.tenant()
    await relay.store.set_key_enabled(disabled.key_id, False)
    assert c.check(await send(http, disabled, body_for(disabled)), "/v1/send").status_code == 403

    # 402 at the pre-flight and at the debit
    broke = await relay.tenant(credits=0)
    assert c.check(await send(http, broke, body_for(broke)), "/v1/send").status_code == 402
    racer = await relay.tenant(credits=1)
    raced = await lose_the_debit_race(relay, racer, lambda: send(http, racer, body_for(racer)))
    assert c.check(raced, "/v1/send").json()["code"] == "INSUFFICIENT_FUNDS"

    # 429 with Retry-After
    limited = await relay.tenant(rate=1)
    _sent(c.check(await send(http, limited, body_for(limited)), "/v1/send"), body_for(limited))
    assert c.check(await send(http, limited, body_for(limited)), "/v1/send").status_code == 429

    # 502 with the messageId of the refunded log row, and its replay
    peer_handler.data_reply = "550 5.1.1 User unknown"
    refused = c.check(await send(http, t, body_for(t), **{"Idempotency-Key": "p"}), "/v1/send")
    assert refused.status_code == 502
    assert (await relay.store.message(uuid.UUID(refused.json()["messageId"])))["status"] == "failed"
    replayed = c.check(await send(http, t, body_for(t), **{"Idempotency-Key": "p"}), "/v1/send")
    assert replayed.status_code == 502 and replayed.headers["idempotent-replayed"] == "true"
    peer_handler.data_reply = None

    # 503 UPSTREAM_UNAVAILABLE, logged
    peer_handler.mail_reply = "421 4.7.0 try later"
    assert c.check(await send(http, t, body_for(t)), "/v1/send").json()["code"] == "UPSTREAM_UNAVAILABLE"
    peer_handler.mail_reply = None

    # 409 IDEMPOTENCY_IN_FLIGHT with Retry-After
    peer_handler.data_delay = 1.0
    slow = asyncio.create_task(send(http, t, body_for(t), **{"Idempotency-Key": "slow"}))
    async with in_flight(relay, slow):
        running = c.check(await send(http, t, body_for(t), **{"Idempotency-Key": "slow"}), "/v1/send")
        assert running.status_code == 409 and running.json()["code"] == "IDEMPOTENCY_IN_FLIGHT"
    c.check(slow.result(), "/v1/send")
    peer_handler.data_delay = 0.0

    # 413: from Content-Length before the body, and from html + text on a relay with a small limit
    status, headers, payload = await raw_http(relay.server.port("http"), (
        f"POST /v1/send HTTP/1.1\nHost: relay.test\nAuthorization: Bearer {t.key}\n"
        f"Content-Length: {body_limit(relay.cfg.limits.max_message_bytes) + 1}\n"))
    request = httpx.Request("POST", f"http://127.0.0.1:{relay.server.port('http')}/v1/send")
    assert c.check(httpx.Response(status, headers=headers, content=payload, request=request),
                   "/v1/send").status_code == 413
    small = await start_relay(relay_config(db_dsn, peer.url, limits={"max_message_bytes": SMALL}), store, peer)
    try:
        async with _client(small) as small_http:
            response = await send(small_http, t, body_for(t, text="x" * (SMALL + 1)))
            assert c.check(response, "/v1/send").status_code == 413
    finally:
        await small.server.stop(grace=1)

    # 503 TEMPORARY: the database does not answer
    async with database_unreachable(relay, pg.admin_dsn):
        assert c.check(await send(http, t, body_for(t)), "/v1/send").json()["code"] == "TEMPORARY"

    c.assert_all_produced("/v1/send", "post")


# The document's request schema and the server agree on what is a valid send request, wherever the
# schema can say it (addresses, authorization and totals across to/cc/bcc are prose).
def _agreement_cases(sender: str) -> list[tuple[str, dict[str, Any]]]:
    base: dict[str, Any] = {"from": sender, "to": "rcpt@dest.test", "text": "hello"}
    many = [f"r{i}@dest.test" for i in range(101)]
    return [
        ("minimal", base),
        ("nulls are absent", base | {"cc": None, "bcc": None, "reply_to": None, "subject": None,
                                     "html": None, "headers": None}),
        ("html only", {"from": sender, "to": "rcpt@dest.test", "html": "<b>hi</b>"}),
        ("empty html beside text", base | {"html": ""}),
        ("lists", base | {"to": ["a@dest.test"], "cc": [], "bcc": ["b@dest.test"], "reply_to": ["c@dest.test"]}),
        ("100 in to", base | {"to": many[:100]}),
        ("101 in to", base | {"to": many}),
        ("101 in cc", base | {"cc": many}),
        ("empty to", base | {"to": []}),
        ("to missing", {"from": sender, "text": "hello"}),
        ("to null", base | {"to": None}),
        ("from missing", {"to": "rcpt@dest.test", "text": "hello"}),
        ("from null", base | {"from": None}),
        ("from a list", base | {"from": [sender]}),
        ("to a number", base | {"to": 5}),
        ("a number in bcc", base | {"bcc": [7]}),
        ("cc an object", base | {"cc": {"a": 1}}),
        ("unknown field", base | {"replyTo": "a@dest.test"}),
        ("subject a number", base | {"subject": 5}),
        ("text a list", base | {"text": ["hello"]}),
        ("no body", {"from": sender, "to": "rcpt@dest.test", "subject": "hi"}),
        ("empty bodies", base | {"text": "", "html": ""}),
        ("null bodies", base | {"text": None, "html": None}),
        ("headers a list", base | {"headers": []}),
        ("header value a number", base | {"headers": {"X-A": 1}}),
        ("header value of 900", base | {"headers": {"X-A": "v" * 900}}),
        ("header value of 901", base | {"headers": {"X-A": "v" * 901}}),
        ("50 headers", base | {"headers": {f"X-H{i}": "v" for i in range(50)}}),
        ("51 headers", base | {"headers": {f"X-H{i}": "v" for i in range(51)}}),
        ("header name of 76", base | {"headers": {"X-" + "n" * 74: "v"}}),
        ("header name of 77", base | {"headers": {"X-" + "n" * 75: "v"}}),
        ("header name with a space", base | {"headers": {"X A": "v"}}),
        ("header name with a colon", base | {"headers": {"X:A": "v"}}),
    ]


async def test_the_request_schema_accepts_what_the_server_accepts(relay: LiveRelay, http: httpx.AsyncClient) -> None:
    c = Conformance()
    t = await relay.tenant(credits=10_000)
    disagreements = []
    for name, body in _agreement_cases(t.sender):
        response = c.check(await send(http, t, body), "/v1/send")
        assert response.status_code in (200, 400), (name, response.text)
        server_accepts = response.status_code == 200
        document_accepts = not _request_errors(body)
        if server_accepts != document_accepts:
            disagreements.append((name, f"server {response.status_code}", _request_errors(body)[:2]))
    assert not disagreements


# -- GET /v1/messages/{messageId} -------------------------------------------------------------------


async def test_every_documented_message_lookup_response_is_real(relay: LiveRelay, http: httpx.AsyncClient,
                                                                pg) -> None:
    c = Conformance()
    path = "/v1/messages/{messageId}"
    t = await relay.tenant(credits=100, daily_cap=2)
    stranger = await relay.tenant(sender="other@example.org")

    async def lookup(message_id: str, tenant: Tenant | str | None = t) -> httpx.Response:
        return c.check(await http.get(f"/v1/messages/{message_id}", headers=_auth(tenant)), path)

    ids = {}
    ids["sent"] = (await send(http, t, body_for(t))).json()["messageId"]
    relay.peer.handler.data_reply = "550 5.1.1 User unknown"
    ids["failed"] = (await send(http, t, body_for(t))).json()["messageId"]
    relay.peer.handler.data_reply = None
    relay.peer.handler.data_delay = 1.0
    slow = asyncio.create_task(send(http, t, body_for(t)))
    async with in_flight(relay, slow):
        [row] = await relay.store.logs(status="sending")
        assert (await lookup(str(row["id"]))).json()["status"] == "sending"
    relay.peer.handler.data_delay = 0.0
    ids["queued"] = (await send(http, t, body_for(t))).json()["messageId"]  # the cap of 2 is reached
    for status, message_id in ids.items():
        response = await lookup(message_id)
        assert response.status_code == 200 and response.json()["status"] == status, response.text
    assert (await lookup(ids["queued"])).json()["deliverAfter"] is not None

    for message_id, tenant in ((ids["sent"], stranger), ("not-a-uuid", t), ("00000000-0000-0000-0000-000000000000", t)):
        assert (await lookup(message_id, tenant)).status_code == 404
    assert (await lookup(ids["sent"], None)).status_code == 401
    assert (await lookup(ids["sent"], "rk_000000000000_nope")).status_code == 401
    disabled = await relay.tenant()
    await relay.store.set_key_enabled(disabled.key_id, False)
    assert (await lookup(ids["sent"], disabled)).status_code == 403
    async with database_unreachable(relay, pg.admin_dsn):
        assert (await lookup(ids["sent"])).status_code == 503

    c.assert_all_produced(path, "get")


# -- operations and routing ------------------------------------------------------------------------


async def test_every_documented_operational_response_is_real(relay: LiveRelay, http: httpx.AsyncClient,
                                                             pg) -> None:
    c = Conformance()
    for path in ("/healthz", "/readyz", "/metrics", "/v1/openapi.json"):
        assert c.check(await http.get(path), path).status_code == 200
    async with database_unreachable(relay, pg.admin_dsn):
        assert c.check(await http.get("/readyz"), "/readyz").status_code == 503
    for path in ("/healthz", "/readyz", "/metrics", "/v1/openapi.json"):
        c.assert_all_produced(path, "get")

    for path in ("/nope", "/v1", "/v1/send/extra", "/v1/messages"):
        assert c.check_routing(await http.get(path), "NotFound").status_code == 404, path
    wrong = [("GET", "/v1/send"), ("POST", "/healthz"), ("DELETE", "/v1/messages/x"), ("PUT", "/v1/openapi.json")]
    for method, path in wrong:
        response = c.check_routing(await http.request(method, path), "MethodNotAllowed")
        assert response.status_code == 405, (method, path)
        documented = {m.upper() for p, item in DOCUMENT["paths"].items() if _template(p).fullmatch(path)
                      for m in item}
        assert set(response.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == documented
    c.assert_routing_produced("NotFound", "404")
    c.assert_routing_produced("MethodNotAllowed", "405")


def test_the_checker_itself_catches_drift() -> None:
    """The conformance checker fails on an undocumented status, a wrong body, a missing or extra header."""
    request = httpx.Request("POST", "http://relay.test/v1/send")

    def response(status: int, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers, request=request)

    c = Conformance()
    good = {"ok": False, "error": "slow down", "code": "RATE_LIMITED"}
    c.check(response(429, good, **{"Retry-After": "3"}), "/v1/send")
    bad = [
        response(418, good),  # undocumented status
        response(429, good),  # Retry-After missing
        response(429, good | {"code": "INVALID"}, **{"Retry-After": "3"}),  # the code of another status
        response(429, good | {"messageId": "x"}, **{"Retry-After": "3"}),  # an undocumented field
        response(400, good | {"code": "INVALID"}, **{"Retry-After": "3"}),  # an undocumented header
        response(502, {"ok": False, "error": "refused", "code": "RELAY_FAILED"}),  # messageId missing
        response(200, {"ok": True, "messageId": "not-a-uuid", "status": "sent"}),
    ]
    for wrong in bad:
        with pytest.raises(AssertionError):
            c.check(wrong, "/v1/send")
    with pytest.raises(AssertionError, match="never produced"):
        c.assert_all_produced("/v1/send", "post")
