"""Cell anchors for review comments.

A comment points at a cell of the executed notebook a publication version shows: the cell's id
plus the sha256 of its source (and optionally a line range or an output). A later version keeps
the comment where the same cell id still exists; if that cell's source hash differs, the comment
is *outdated* and is shown beside the new text. Cells without an id (nbformat < 4.5) are
addressed by position as "index-N".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.core.files.storage import default_storage

from .models import PublicationVersion


@dataclass(frozen=True)
class AnchorCell:
    index: int
    cell_id: str
    cell_type: str
    source: str
    source_sha256: str
    output_count: int

    @property
    def line_count(self) -> int:
        return len(self.source.splitlines()) or 1


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def cells_of(notebook: dict[str, Any]) -> list[AnchorCell]:
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        source = _text(cell.get("source"))
        cells.append(
            AnchorCell(
                index=index,
                cell_id=str(cell.get("id") or f"index-{index}"),
                cell_type=str(cell.get("cell_type", "code")),
                source=source,
                source_sha256=source_sha256(source),
                output_count=len(cell.get("outputs", []) or []),
            )
        )
    return cells


def version_cells(version: PublicationVersion) -> list[AnchorCell]:
    """The cells of the executed notebook the version shows (its run's output)."""
    with default_storage.open(version.run.output_storage_name, "rb") as handle:
        return cells_of(json.load(handle))


def by_id(cells: list[AnchorCell]) -> dict[str, AnchorCell]:
    return {cell.cell_id: cell for cell in cells}
