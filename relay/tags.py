"""Tags and metadata of a message: checked on the way in, from JSON (API) or headers (SMTP)."""

from __future__ import annotations

import argparse
import json
import re
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

MAX_TAGS = 10
MAX_METADATA_BYTES = 2048
TAG_PART = re.compile(r"[A-Za-z0-9_-]{1,256}")  # Resend's rule: ASCII letters, digits, _ and -

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # a \u0000 escape, not an escaped backslash

Tags = tuple[tuple[str, str], ...]


class TagError(ValueError):
    """Tags or metadata are not acceptable; the text says which."""


def _checked_tags(pairs: list[tuple[object, object]], where: str) -> Tags:
    if len(pairs) > MAX_TAGS:
        raise TagError(f"{where}: at most {MAX_TAGS} tags")
    seen: set[str] = set()
    for i, (name, value) in enumerate(pairs):
        for part, text in (("name", name), ("value", value)):
            if not isinstance(text, str) or not TAG_PART.fullmatch(text):
                raise TagError(f"{where}[{i}]: the {part} must be 1-256 ASCII letters, digits, '_' or '-'")
        assert isinstance(name, str)
        if name in seen:
            raise TagError(f"{where}: the tag {name!r} is given more than once")
        seen.add(name)
    return tuple((str(n), str(v)) for n, v in pairs)


def parse_tags(value: object) -> Tags:
    """The JSON field 'tags': a list of {name, value}."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise TagError("field 'tags' must be a list of {\"name\", \"value\"} objects")
    for i, tag in enumerate(value):
        if set(tag) != {"name", "value"}:
            raise TagError(f"tags[{i}] must have exactly 'name' and 'value'")
    return _checked_tags([(t["name"], t["value"]) for t in value], "tags")


def parse_metadata(value: object) -> str | None:
    """The JSON field 'metadata': an object, returned as compact JSON of at most 2 KB."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TagError("field 'metadata' must be a JSON object")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    if _NUL_ESCAPE.search(text):  # PostgreSQL's jsonb cannot hold NUL
        raise TagError("field 'metadata' must not contain NUL characters")
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise TagError(f"field 'metadata' must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return text


def tags_from_header(value: str) -> Tags:
    """X-Relay-Tags: 'name=value, name2=value2'."""
    pairs: list[tuple[object, object]] = []
    for item in value.split(","):
        if not item.strip():
            continue
        name, eq, text = item.strip().partition("=")
        if not eq:
            raise TagError("X-Relay-Tags: write tags as name=value, separated by commas")
        pairs.append((name.strip(), text.strip()))
    return _checked_tags(pairs, "X-Relay-Tags")


def metadata_from_header(value: str) -> str | None:
    """X-Relay-Metadata: a JSON object on one (unfolded) line."""
    try:
        doc: Any = json.loads(value)
    except ValueError:
        raise TagError("X-Relay-Metadata must be a JSON object") from None
    try:
        return parse_metadata(doc)
    except TagError as exc:
        raise TagError(str(exc).replace("field 'metadata'", "X-Relay-Metadata")) from None


def tags_json(tags: Tags) -> str | None:
    """Tags as the JSON object stored with the message ({name: value}), None when there are none."""
    return json.dumps(dict(tags), separators=(",", ":")) if tags else None


SMTP_HEADERS = ("x-relay-tags", "x-relay-metadata")  # read, then removed before relaying


def from_smtp_headers(header_block: bytes) -> tuple[Tags, str | None]:
    """Tags and metadata from a message's X-Relay-Tags: / X-Relay-Metadata: headers (unfolded);
    TagError when one is malformed or given twice."""
    if b"x-relay-" not in header_block.lower():  # the common case costs one scan of the header
        return (), None
    parsed = BytesHeaderParser(policy=compat32).parsebytes(header_block)
    found: dict[str, str] = {}
    for name in SMTP_HEADERS:
        values = parsed.get_all(name) or []
        if len(values) > 1:
            raise TagError(f"{name.title()} is given more than once")
        if values:
            found[name] = "".join(str(values[0]).splitlines()).strip()
    tags = tags_from_header(found["x-relay-tags"]) if "x-relay-tags" in found else ()
    metadata = metadata_from_header(found["x-relay-metadata"]) if "x-relay-metadata" in found else None
    return tags, metadata


def cli_tag(text: str) -> tuple[str, str]:
    """A command line's NAME=VALUE tag filter (argparse type)."""
    name, eq, value = text.partition("=")
    if not eq or not TAG_PART.fullmatch(name) or not TAG_PART.fullmatch(value):
        raise argparse.ArgumentTypeError(f"a tag is NAME=VALUE of ASCII letters, digits, '_' or '-': {text!r}")
    return name, value
