"""PROXY protocol v1 (text) and v2 (binary) headers, as a TCP load balancer sends them (haproxy.org spec)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
V2_MAX = 16 + 216  # header and the largest address block relay reads (AF_UNIX)


@dataclass(frozen=True)
class ProxyData:
    """What the balancer said about the client; src_addr is None for LOCAL/UNKNOWN (a health check)."""

    version: int
    src_addr: str | None = None
    dst_addr: str | None = None
    src_port: int | None = None
    dst_port: int | None = None


class ProxyError(Exception):
    """The bytes are not a well-formed PROXY header."""


def needed(buffer: bytes | bytearray) -> int:
    """How many bytes the header takes: 0 while that is not yet known, -1 when it cannot be one."""
    if len(buffer) < 6 and b"PROXY ".startswith(bytes(buffer)):
        return 0
    if buffer.startswith(b"PROXY "):
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        return -1 if len(buffer) >= V1_MAX else 0
    known = min(len(buffer), 12)
    if buffer[:known] != V2_SIGNATURE[:known]:
        return -1
    if len(buffer) < 16:
        return 0
    length = 16 + struct.unpack_from("!H", buffer, 14)[0]
    return length if length <= V2_MAX + 1024 else -1  # TLVs after the addresses are skipped


def parse(header: bytes) -> ProxyData:
    """The header's data (header is exactly needed() bytes long)."""
    if header.startswith(b"PROXY "):
        return _parse_v1(header)
    return _parse_v2(header)


def _parse_v1(header: bytes) -> ProxyData:
    parts = header[:-2].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyData(1)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError("malformed PROXY v1 line")
    try:
        src, dst = ipaddress.ip_address(parts[2]), ipaddress.ip_address(parts[3])
        sport, dport = int(parts[4]), int(parts[5])
    except ValueError:
        raise ProxyError("malformed PROXY v1 address") from None
    if src.version != (4 if parts[1] == "TCP4" else 6) or dst.version != src.version \
            or not (0 <= sport <= 65535 and 0 <= dport <= 65535) or not parts[4].isdigit() \
            or not parts[5].isdigit():
        raise ProxyError("malformed PROXY v1 address")
    return ProxyData(1, str(src), str(dst), sport, dport)


def _parse_v2(header: bytes) -> ProxyData:
    version_command, family = header[12], header[13]
    if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
        raise ProxyError("unsupported PROXY v2 version or command")
    if version_command & 0x0F == 0:  # LOCAL: the balancer's own connection
        return ProxyData(2)
    body = header[16:]
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        src4, dst4, sport, dport = struct.unpack_from("!4s4sHH", body)
        return ProxyData(2, str(ipaddress.IPv4Address(src4)), str(ipaddress.IPv4Address(dst4)), sport, dport)
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        src6, dst6, sport, dport = struct.unpack_from("!16s16sHH", body)
        return ProxyData(2, str(ipaddress.IPv6Address(src6)), str(ipaddress.IPv6Address(dst6)), sport, dport)
    if family == 0x00:  # UNSPEC
        return ProxyData(2)
    raise ProxyError("unsupported PROXY v2 address family")
