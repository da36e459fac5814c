"""SPDX license ids, checked against the SPDX license list (through `license-expression`, which
ships it), so "CC-BY-4.0" passes and "Made-Up-1.0" does not; case is normalised ("mit" -> "MIT")."""

import re
from functools import lru_cache
from typing import Any

from license_expression import get_spdx_licensing  # type: ignore[import-untyped, unused-ignore]

SPDX_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")


@lru_cache(maxsize=1)
def _licensing() -> Any:
    return get_spdx_licensing()  # parses the bundled license index once per process


def spdx_license_id(value: str) -> str | None:
    """The canonical SPDX id for `value`, or None when it is not one listed id (expressions such
    as "MIT OR Apache-2.0" are not single ids)."""
    value = (value or "").strip()
    if not SPDX_ID_SHAPE.fullmatch(value):
        return None
    try:
        info = _licensing().validate(value)
    except Exception:  # the library raises on some malformed keys instead of reporting them
        return None
    normalized = info.normalized_expression
    if info.errors or not normalized or " " in normalized:
        return None
    return str(normalized)
