"""Human-readable diff of two notebook versions, computed with nbdime.

`notebook_diff(old, new)` turns nbdime's structural diff (``nbdime.diff_notebooks``) into a flat
list of `CellChange`, one per cell, in the new notebook's order with removed cells left at their old
position (before any cells added in their place): what a template needs to show a person "what
changed between version 3 and version 5".

How nbdime is used
------------------
* Both notebooks are deep-copied, upgraded to nbformat 4 when older, turned into ``NotebookNode``
  (nbdime reads outputs by attribute) and normalised first: multi-line strings rejoined
  (``nbformat.v4.rwbase.rejoin_lines``), ``execution_count`` dropped from cells and outputs,
  output ``metadata`` dropped, and execution-timing keys (`IGNORED_CELL_METADATA`: papermill,
  JupyterLab's ``execution``, the ExecuteTime extension) dropped from cell metadata. A re-executed
  but otherwise identical notebook therefore diffs as empty. nbdime's module-global ignore
  configuration (``set_notebook_diff_ignores``) is deliberately NOT used: it is process-wide
  state and unsafe in a threaded web server.
* Cell alignment is nbdime's (multilevel predicates: cell id, then strict, moderate and approximate
  content similarity; cells with different ids but similar content may still be paired and shown
  as "modified"). Its ``/cells`` sequence diff (``addrange`` / ``removerange`` / ``patch``,
  keyed by old index) is walked to pair old and new indices.
* A ``patch`` of a cell is a mapping diff; its ``source`` entry is nbdime's line-wise diff
  (``addrange`` / ``removerange`` of lines, ``patch`` = a line edited in place, with a char diff we
  do not need). An edited line becomes a "removed" + "added" pair, grouped per hunk as in
  ``git diff`` (all removals of a hunk, then all additions). A line whose only change is its
  trailing newline (appending a line after the last one) counts as unchanged. Should nbdime give no
  source diff while the sources differ, difflib is used instead.
* The ``outputs`` entry is nbdime's output sequence diff; it is summarised by counting
  added / removed / patched outputs. ``id`` changes alone do not make a cell "modified".

Collapsing: in modified cells, runs of unchanged lines further than `CONTEXT_LINES` (3) lines from a
change are replaced by one ``LineChange("skip", "… 12 unchanged lines")`` (only when at least two
lines would be hidden). Pass ``context=None`` to keep every line. Unchanged, added and removed
cells are never collapsed (the template folds unchanged cells away as a whole).

nbdime's diff is not cheap on large notebooks; versions are immutable, so callers may cache the
result per (old version, new version) pair.
"""

from __future__ import annotations

import copy
import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nbdime
import nbformat
from nbdime.diff_format import op_addrange, op_removerange
from nbdime.diff_utils import count_consumed_symbols
from nbformat.v4.rwbase import rejoin_lines

__all__ = [
    "CONTEXT_LINES",
    "IGNORED_CELL_METADATA",
    "STATUSES",
    "CellChange",
    "LineChange",
    "diff_summary",
    "notebook_diff",
]

STATUSES = ("added", "removed", "modified", "unchanged")

# Cell-metadata keys written by executing a notebook, not by its author.
IGNORED_CELL_METADATA = frozenset({"papermill", "execution", "ExecuteTime"})

CONTEXT_LINES = 3

_CELL_OP_ORDER = {"removerange": 0, "addrange": 1, "patch": 2}


@dataclass
class LineChange:
    op: str  # "same" | "added" | "removed" | "skip" (a collapsed run of unchanged lines)
    text: str  # the line without its newline; for "skip": "… N unchanged lines"


@dataclass
class CellChange:
    status: str  # "added" | "removed" | "modified" | "unchanged"
    cell_type: str  # code / markdown / raw
    old_index: int | None  # index in the old notebook (None: added)
    new_index: int | None  # index in the new notebook (None: removed)
    cell_id: str  # new side's id when present, else old's; "" if none
    source_lines: list[LineChange] = field(default_factory=list)
    outputs_changed: bool = False  # code cells: outputs differ (execution_count and metadata ignored)
    output_summary: str = ""  # e.g. "1 output added, 2 outputs changed"; "" if nothing to say
    metadata_changed: bool = False  # cell metadata differs (timing/papermill keys ignored)


def notebook_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], *, context: int | None = CONTEXT_LINES
) -> list[CellChange]:
    """Cell-by-cell changes from `old` to `new` (nbformat 4 notebooks as dicts), in new-notebook
    order with removed cells at their old position."""
    a, b = _normalise(old), _normalise(new)
    old_cells, new_cells = a.cells, b.cells
    # Both sides have a "cells" list, so nbdime reports their differences as one "patch" entry.
    cells_diff: list[Any] = next(
        (entry["diff"] for entry in nbdime.diff_notebooks(a, b) if entry["key"] == "cells"), []
    )

    changes: list[CellChange] = []
    i = j = 0  # next old / new cell index

    def unchanged_until(key: int) -> None:
        nonlocal i, j
        while i < key:
            changes.append(_whole_cell("unchanged", new_cells[j], i, j))
            i += 1
            j += 1

    # nbdime puts an addrange before a removerange at the same key; show removals first, like the
    # line diff (and git). Both orders describe the same change: the walk consumes old and new
    # cells independently.
    for entry in sorted(cells_diff, key=lambda e: (e["key"], _CELL_OP_ORDER[e["op"]])):
        unchanged_until(entry["key"])
        op = entry["op"]
        if op == "addrange":
            for _ in entry["valuelist"]:
                changes.append(_whole_cell("added", new_cells[j], None, j))
                j += 1
        elif op == "removerange":
            for _ in range(entry["length"]):
                changes.append(_whole_cell("removed", old_cells[i], i, None))
                i += 1
        else:  # "patch"
            changes.append(_patched_cell(old_cells[i], new_cells[j], i, j, entry["diff"], context))
            i += 1
            j += 1
    unchanged_until(len(old_cells))
    assert j == len(new_cells), "nbdime's cell diff does not account for every new cell"
    return changes


def diff_summary(changes: Iterable[CellChange]) -> dict[str, int]:
    """How many cells were added / removed / modified / unchanged (every status present, maybe 0)."""
    counts = Counter(change.status for change in changes)
    return {status: counts.get(status, 0) for status in STATUSES}


# ---------------------------------------------------------------------------------------------
# Normalisation


def _normalise(notebook: Mapping[str, Any]) -> Any:
    nb = nbformat.from_dict(copy.deepcopy(dict(notebook)))
    if nb.get("nbformat", 4) < 4:
        nb = nbformat.convert(nb, 4)
    nb.setdefault("cells", [])
    rejoin_lines(nb)
    for cell in nb.cells:
        cell.setdefault("cell_type", "raw")
        cell.setdefault("source", "")
        cell.setdefault("metadata", nbformat.NotebookNode())
        cell.pop("execution_count", None)
        for key in IGNORED_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.setdefault("outputs", [])
            for output in cell.outputs:
                output.setdefault("output_type", "")
                output.pop("execution_count", None)
                output.pop("metadata", None)
    return nb


# ---------------------------------------------------------------------------------------------
# Cells


def _whole_cell(status: str, cell: Any, old_index: int | None, new_index: int | None) -> CellChange:
    op = {"added": "added", "removed": "removed"}.get(status, "same")
    outputs = cell.get("outputs") or []
    return CellChange(
        status=status,
        cell_type=cell.cell_type,
        old_index=old_index,
        new_index=new_index,
        cell_id=str(cell.get("id") or ""),
        source_lines=[LineChange(op, _strip_eol(line)) for line in _lines(cell.source)],
        # An added/removed cell's outputs are new/gone with it: count them, don't flag a change.
        output_summary=_plural(len(outputs), "output") if status in ("added", "removed") and outputs else "",
    )


def _patched_cell(old: Any, new: Any, i: int, j: int, cell_diff: list[Any], context: int | None) -> CellChange:
    by_key = {entry["key"]: entry for entry in cell_diff}
    source_entry = by_key.get("source")
    outputs_entry = by_key.get("outputs")
    attachments_changed = "attachments" in by_key
    metadata_changed = "metadata" in by_key
    other_changed = bool(set(by_key) - {"id", "source", "outputs", "attachments", "metadata"})

    lines = _source_lines(
        old.source, new.source, source_entry["diff"] if source_entry and source_entry["op"] == "patch" else None
    )
    source_changed = any(line.op != "same" for line in lines)

    summary_parts = []
    if outputs_entry is not None:
        summary_parts.append(_summarise_outputs(outputs_entry, old.get("outputs") or [], new.get("outputs") or []))
    if attachments_changed:
        summary_parts.append("attachments changed")
    output_summary = ", ".join(part for part in summary_parts if part)

    modified = source_changed or outputs_entry is not None or attachments_changed or metadata_changed or other_changed
    if modified and context is not None:
        lines = _collapse(lines, context)
    return CellChange(
        status="modified" if modified else "unchanged",
        cell_type=new.cell_type,
        old_index=i,
        new_index=j,
        cell_id=str(new.get("id") or old.get("id") or ""),
        source_lines=lines,
        outputs_changed=outputs_entry is not None,
        output_summary=output_summary,
        metadata_changed=metadata_changed,
    )


def _summarise_outputs(entry: Any, old_outputs: list[Any], new_outputs: list[Any]) -> str:
    if entry["op"] != "patch":  # the whole "outputs" key was added, removed or replaced
        return "outputs changed"
    added = removed = changed = 0
    for op in entry["diff"]:
        if op["op"] == "addrange":
            added += len(op["valuelist"])
        elif op["op"] == "removerange":
            removed += op["length"]
        else:
            changed += 1
    # nbdime reports a replaced output as one removal plus one addition: call those "changed".
    replaced = min(added, removed)
    parts = []
    if changed + replaced:
        parts.append(_plural(changed + replaced, "output") + " changed")
    if added - replaced:
        parts.append(_plural(added - replaced, "output") + " added")
    if removed - replaced:
        parts.append(_plural(removed - replaced, "output") + " removed")
    return ", ".join(parts) or "outputs changed"


# ---------------------------------------------------------------------------------------------
# Source lines


def _lines(source: Any) -> list[str]:
    text = "".join(source) if isinstance(source, list) else str(source or "")
    return text.splitlines(True)


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def _source_lines(old_source: Any, new_source: Any, line_diff: list[Any] | None) -> list[LineChange]:
    old_lines, new_lines = _lines(old_source), _lines(new_source)
    if line_diff is None:
        if old_lines == new_lines:
            return [LineChange("same", _strip_eol(line)) for line in old_lines]
        line_diff = _difflib_ops(old_lines, new_lines)

    out: list[LineChange] = []
    removed: list[str] = []
    added: list[str] = []

    def flush() -> None:
        out.extend(LineChange("removed", text) for text in removed)
        out.extend(LineChange("added", text) for text in added)
        removed.clear()
        added.clear()

    def same(line: str) -> None:
        flush()
        out.append(LineChange("same", _strip_eol(line)))

    i = j = 0
    for entry in line_diff:
        while i < entry["key"]:
            same(old_lines[i])
            i += 1
            j += 1
        op = entry["op"]
        if op == "addrange":
            added.extend(_strip_eol(line) for line in new_lines[j : j + len(entry["valuelist"])])
        elif op == "removerange":
            removed.extend(_strip_eol(line) for line in old_lines[i : i + entry["length"]])
        elif op == "patch":  # a line edited in place
            if _strip_eol(old_lines[i]) == _strip_eol(new_lines[j]):  # only its newline changed
                same(new_lines[j])
            else:
                removed.append(_strip_eol(old_lines[i]))
                added.append(_strip_eol(new_lines[j]))
        consumed_old, consumed_new = count_consumed_symbols(entry)
        i += consumed_old
        j += consumed_new
    while i < len(old_lines):
        same(old_lines[i])
        i += 1
    flush()
    return out


def _difflib_ops(old_lines: list[str], new_lines: list[str]) -> list[Any]:
    """nbdime's sequence-diff entries, computed with difflib (the fallback)."""
    ops: list[Any] = []
    # Compare without line ends, so appending after a last line without "\n" keeps that line "same".
    matcher = difflib.SequenceMatcher(
        None, [_strip_eol(x) for x in old_lines], [_strip_eol(x) for x in new_lines], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            ops.append(op_addrange(i1, new_lines[j1:j2]))
        if tag in ("delete", "replace"):
            ops.append(op_removerange(i1, i2 - i1))
    return ops


def _collapse(lines: list[LineChange], context: int) -> list[LineChange]:
    """Replace unchanged lines more than `context` lines away from any change with "skip" markers."""
    changed = [k for k, line in enumerate(lines) if line.op != "same"]
    if not changed:
        return lines
    keep = [False] * len(lines)
    for k in changed:
        for n in range(max(0, k - context), min(len(lines), k + context + 1)):
            keep[n] = True
    out: list[LineChange] = []
    k = 0
    while k < len(lines):
        if keep[k]:
            out.append(lines[k])
            k += 1
            continue
        end = k
        while end < len(lines) and not keep[end]:
            end += 1
        hidden = end - k
        if hidden >= 2:
            out.append(LineChange("skip", f"… {hidden} unchanged lines"))
        else:
            out.extend(lines[k:end])
        k = end
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
