"""The path argument of MAIL FROM / RCPT TO (RFC 5321 4.1.2, RFC 6531 for UTF-8): address and parameters."""

from __future__ import annotations

import functools

# RFC 5322 atext without the ASCII letters and digits (checked with isalnum); any non-ASCII
# character is allowed too (RFC 6531 3.3: UTF-8 in local parts and domains)
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")
_DOMAIN_SPECIALS = frozenset("-._")
NULL_PATH = "<>"


def _atom_char(ch: str) -> bool:
    return ch.isalnum() or ch in _ATEXT_SPECIALS or ord(ch) > 127


def _dot_string(text: str) -> bool:
    """Dot-string: atoms of atext separated by single dots."""
    return bool(text) and all(atom and all(_atom_char(c) for c in atom) for atom in text.split("."))


def _quoted_local(text: str) -> str | None:
    """The content of a quoted-string local part (quoted pairs resolved), None when malformed."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    out: list[str] = []
    escaped = False
    for ch in text[1:-1]:
        if escaped:
            if not (" " <= ch <= "~"):
                return None
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"' or (ord(ch) < 32 or ord(ch) == 127):
            return None
        else:
            out.append(ch)
    return None if escaped else "".join(out)


def _quote(local: str) -> str:
    """A local part as it is written: bare when it is a dot-string, else quoted (RFC 5321 4.1.2)."""
    if _dot_string(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _domain_ok(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):  # address literal
        return len(domain) > 2 and all(" " < c < "\x7f" and c not in "[]\\" for c in domain[1:-1])
    return all(label and all(c.isalnum() or c in _DOMAIN_SPECIALS or ord(c) > 127 for c in label)
               for label in domain.split("."))


def _mailbox(text: str) -> str | None:
    """A mailbox (local@domain, or a bare local part: the caller's checks refuse it) in canonical form."""
    if text.startswith('"'):
        end = _closing_quote(text, 0)
        if end < 0:
            return None
        local = _quoted_local(text[:end + 1])
        rest = text[end + 1:]
        if local is None or (rest and not rest.startswith("@")):
            return None
        local_text = _quote(local)
    else:
        at = text.rfind("@")
        local_text, rest = (text, "") if at < 0 else (text[:at], text[at:])
        if not _dot_string(local_text):
            return None
    if not rest:
        return local_text
    domain = rest[1:]
    if not _domain_ok(domain):
        return None
    return f"{local_text}@{domain}"


def _closing_quote(text: str, start: int) -> int:
    """Index of the quote that closes the quoted string opened at start, or -1."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


@functools.lru_cache(maxsize=4096)
def parse_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) from 'FROM:'/'TO:'-stripped text; None when malformed.

    The path is an angle-addr ('<a@b>', the null path '<>' returned as '<>', a source route
    '<@x,@y:a@b>' dropped as RFC 5321 C allows) or a bare address ('a@b'). A quoted local part is
    kept quoted only when it needs to be. Memoized: senders repeat.
    """
    text = arg.strip()
    if not text or not text.isprintable():  # controls, and bytes that were not UTF-8 (surrogates)
        return None
    if text.startswith("<"):
        i = 1
        while i < len(text) and text[i] != ">":
            if text[i] == '"':
                close = _closing_quote(text, i)
                if close < 0:
                    return None
                i = close
            i += 1
        if i >= len(text):
            return None
        inner, params = text[1:i], text[i + 1:]
        if params and not params[0].isspace():
            return None
        if not inner:
            return NULL_PATH, params.strip()
        if inner.startswith("@"):  # source route: <@a,@b:user@c>
            colon = inner.find(":")
            if colon < 0:
                return None
            inner = inner[colon + 1:]
    else:
        i = _closing_quote(text, 0) if text.startswith('"') else 0
        if i < 0:
            return None
        space = next((j for j in range(i, len(text)) if text[j].isspace()), len(text))
        inner, params = text[:space], text[space:]
    address = _mailbox(inner)
    if address is None:
        return None
    return address, params.strip()


def parse_params(params: str) -> dict[str, str | bool] | None:
    """ESMTP parameters ('SIZE=10 BODY=8BITMIME', upper-cased by the caller) as a dict; None when malformed."""
    result: dict[str, str | bool] = {}
    for param in params.split():
        key, eq, value = param.partition("=")
        if not key.isalnum() or not key.isascii() or (eq and not value):
            return None
        result[key] = value if eq else True
    return result
