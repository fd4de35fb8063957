"""How every `relay` command prints its result: text for people, or JSON with --json."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime
from typing import Any


def jsonable(value: Any) -> Any:
    """What json.dumps cannot write itself: times in ISO 8601, UUIDs and other values as text, bytes in hex."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print data as JSON when the command was given --json, else text."""
    print(json.dumps(data, default=jsonable) if args.json else text)
