"""A real DNS server for tests: dnslib on 127.0.0.1, UDP, port 0, answering from zone-file lines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from the records published on it; NXDOMAIN for a name it has nothing at."""

    def __init__(self) -> None:
        self.records: list[RR] = []
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        with self.lock:
            at_name = [rr for rr in self.records if rr.rname == qname]
        for rr in at_name:
            if rr.rtype == qtype or qtype == QTYPE.ANY:
                reply.add_answer(rr)
        if not at_name:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class ZoneServer:
    """The server and what it publishes; publish() replaces the zone with the given zone-file text."""

    def __init__(self) -> None:
        self._resolver = _ZoneResolver()
        self._server = DNSServer(self._resolver, address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda _: None))

    @property
    def nameserver(self) -> str:
        """The server as a `[dns] nameservers` entry."""
        host, port = self._server.server.server_address[:2]
        return f"{host}:{port}"

    def publish(self, zone_text: str) -> None:
        """Serve exactly the records in zone_text (zone-file lines, as `relay domain add` prints them)."""
        parsed = RR.fromZone(zone_text) if zone_text.strip() else []
        with self._resolver.lock:
            self._resolver.records = parsed

    def start(self) -> None:
        self._server.start_thread()

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()


@contextmanager
def zone_server() -> Iterator[ZoneServer]:
    """A running ZoneServer for the length of the block."""
    server = ZoneServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
