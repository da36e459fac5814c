"""Record a value from inside a notebook so reproduction checks compare it by name:

    from reprolab_agent import record
    record("accuracy", 0.9312)

Writes scrapbook's `glue` output format (mime `application/scrapbook.scrap.json+json`), so
notebooks that already use scrapbook are understood the same way.
"""

from __future__ import annotations

import json
from typing import Any

SCRAP_MIME = "application/scrapbook.scrap.json+json"


def scrap(name: str, value: Any) -> dict[str, Any]:
    json.dumps(value)  # fail here, with the value's type, rather than in the notebook's output
    return {"name": name, "data": value, "encoder": "json", "version": 1}


def record(name: str, value: Any) -> None:
    from IPython.display import display

    display(
        {SCRAP_MIME: scrap(name, value)},
        raw=True,
        metadata={"scrapbook": {"name": name, "data": True, "display": False}},
    )
