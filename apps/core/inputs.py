"""Untrusted scalars and documents, parsed with bounds, so bad input is a 4xx and never a 500.

- Integers from query strings: ASCII digits only (`str.isdigit()` accepts "²", which `int()`
  refuses) and within the column's range (a value past 2**63 overflows the database driver).
- JSON: Python's json module and everything after it (nbformat, jsonschema, nbdime, deepcopy)
  recurse once per nesting level, so a 5,000-level document raises RecursionError. The depth is
  bounded here, by an iterative walk, before any recursive code sees the document.
"""

import json
import math
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404

MAX_ID = 2**63 - 1  # BigAutoField primary keys
MAX_NUMBER = 2**31 - 1  # PositiveIntegerField: version numbers, sequence numbers, counts
# Real notebooks nest a few levels (cells, outputs, a Vega or Plotly spec inside: ~20); the
# tools that read them recurse a few frames per level and stay far from Python's limit here.
MAX_JSON_DEPTH = 100

_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_int(raw: str | None, *, field: str, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """A whole number typed by a client, or ValidationError({field: why}) (a 400 in the API)."""
    text = (raw or "").strip()
    if _ASCII_DIGITS.fullmatch(text) and minimum <= int(text) <= maximum:
        return int(text)
    raise ValidationError({field: f"{field} must be a whole number from {minimum} to {maximum}, not {text[:40]!r}."})


def int_or_404(raw: str | None, *, message: str, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """For pages where a bad number names nothing that exists (`?v=²`): 404 with `message`."""
    try:
        return parse_int(raw, field="value", minimum=minimum, maximum=maximum)
    except ValidationError:
        raise Http404(message) from None


class JSONTooDeep(ValueError):
    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"The JSON document is nested too deeply (more than {limit} levels).")


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists and dicts in `value` nest more than `limit` levels. Iterative, and stops at
    the first level past the limit."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def check_json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """`value` unchanged, or JSONTooDeep."""
    if json_depth_exceeds(value, limit):
        raise JSONTooDeep(limit)
    return value


NOT_FINITE_MESSAGE = "NaN and Infinity are not JSON numbers."
NUL_MESSAGE = "Text may not contain NUL characters (\\u0000): PostgreSQL cannot store them in JSON."


def json_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why `value` cannot be stored as a JSON column, or None: nested past `limit`, a NUL character
    in a key or string, or NaN/Infinity (PostgreSQL's jsonb refuses both: the insert was a 500)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return NUL_MESSAGE
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return NOT_FINITE_MESSAGE
        if isinstance(item, dict):
            children: Any = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return str(JSONTooDeep(limit))
        stack.extend((child, depth + 1) for child in children if isinstance(child, str | float | dict | list | tuple))
    return None


def without_nul(value: Any) -> Any:
    """`value` with NUL characters replaced by U+FFFD, for text a notebook printed (it may print
    anything) on its way into a JSON column. Recursive: call it on depth-checked values only."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value


def loads_bounded(text: str | bytes, *, limit: int = MAX_JSON_DEPTH, **kwargs: Any) -> Any:
    """json.loads, with JSONTooDeep (a ValueError, like json's own errors) for a document nested
    more than `limit` levels, including one so deep that the decoder itself gives up."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise JSONTooDeep(limit) from None
    return check_json_depth(value, limit)
