"""Attachments of an API send: decode the base64, sanitize the filename, settle type and disposition."""

from __future__ import annotations

import binascii
import mimetypes
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

MAX_ATTACHMENTS = 100
MAX_FILENAME = 255  # characters, as most file systems allow
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
# Content-ID (RFC 2392 cid: URLs): a msg-id without its angle brackets
_CONTENT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]{1,200}")
_FIELDS = frozenset({"filename", "content", "content_type", "content_id", "disposition"})
_WHITESPACE = re.compile(r"[ \t\r\n]+")


class AttachmentError(ValueError):
    """An attachment is not acceptable; the text names it."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file to attach, decoded and checked."""

    filename: str
    content: bytes
    content_type: str
    content_id: str | None = None
    disposition: str = "attachment"


def sanitize_filename(name: str) -> str:
    """The last path component, without control characters or surrounding dots and spaces;
    'attachment' when nothing is left. Non-ASCII stays (written with RFC 2231 by relay/mime.py)."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip(" .")
    if len(name) > MAX_FILENAME:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 16 else ""
        name = name[:MAX_FILENAME - len(keep) - 1] + "." + keep if keep else name[:MAX_FILENAME]
    return name or "attachment"


def decode_base64(text: str) -> bytes:
    """Standard base64 (whitespace between lines allowed); ValueError when it is not."""
    try:  # the str as it is (ASCII only, else ValueError): no encoded copy of megabytes
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        pass
    # line-wrapped base64 (base64.encodebytes, MIME bodies): strict once the whitespace is gone
    return binascii.a2b_base64(_WHITESPACE.sub("", text), strict_mode=True)


def _label(i: int, item: dict[str, Any]) -> str:
    name = item.get("filename")
    return f"attachments[{i}] ({name!r})" if isinstance(name, str) else f"attachments[{i}]"


def parse_attachment(i: int, item: object, content: bytes | None = None) -> Attachment:
    """One entry of 'attachments'; content, when given, was already decoded by the caller (Resend's
    byte arrays)."""
    if not isinstance(item, dict):
        raise AttachmentError(f"attachments[{i}] must be an object")
    label = _label(i, item)
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise AttachmentError(f"{label}: unknown field {unknown[0]!r}; expected some of "
                              f"{', '.join(sorted(_FIELDS))}")
    raw_name = item.get("filename")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise AttachmentError(f"{label}: 'filename' is required")
    filename = sanitize_filename(raw_name)
    if content is None:
        encoded = item.get("content")
        if not isinstance(encoded, str):
            raise AttachmentError(f"{label}: 'content' is required, as a base64 string")
        try:
            content = decode_base64(encoded)
        except ValueError:
            raise AttachmentError(f"{label}: 'content' is not valid base64") from None
    content_type = item.get("content_type")
    if content_type is None:
        content_type = mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"
    elif not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise AttachmentError(f"{label}: 'content_type' must be a MIME type like application/pdf")
    content_id = item.get("content_id")
    if content_id is not None:
        if not isinstance(content_id, str):
            raise AttachmentError(f"{label}: 'content_id' must be a string")
        content_id = content_id.strip().removeprefix("<").removesuffix(">")
        if not _CONTENT_ID.fullmatch(content_id):
            raise AttachmentError(f"{label}: 'content_id' must be 1-200 printable ASCII characters "
                                  "without spaces or angle brackets")
    disposition = item.get("disposition", "inline" if content_id else "attachment")
    if disposition not in ("attachment", "inline"):
        raise AttachmentError(f"{label}: 'disposition' must be 'attachment' or 'inline'")
    return Attachment(filename, content, content_type.lower(), content_id, disposition)


def parse_attachments(value: object) -> tuple[Attachment, ...]:
    """The 'attachments' field."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise AttachmentError("field 'attachments' must be a list of objects")
    if len(value) > MAX_ATTACHMENTS:
        raise AttachmentError(f"field 'attachments' may hold at most {MAX_ATTACHMENTS} files")
    found = tuple(parse_attachment(i, item) for i, item in enumerate(value))
    ids = [a.content_id for a in found if a.content_id]
    if len(ids) != len(set(ids)):
        raise AttachmentError("attachments: a content_id is used more than once")
    return found
