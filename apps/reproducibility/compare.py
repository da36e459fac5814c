"""Cell-by-cell comparison of executed notebooks, for reproduction checks. Pure functions.

Normalisation drops what legitimately differs between identical runs: timing and papermill
metadata, execution counts, cell ids (papermill gives the injected-parameters cell a new one
every run) and memory addresses in reprs (`0x7f…`). Then, per code cell and output:
text equal, or equal apart from numbers that agree within rtol/atol; images by pixel similarity;
errors by name and message; recorded values (scrapbook `glue` format) exactly or within
tolerance. With several reruns, what varies between them is *flaky*, and judged by whether the
original lies within the reruns' spread.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

from reprolab_agent import arrays
from reprolab_agent.arrays import DIFFERENT, SAME, WITHIN  # one vocabulary with the agent

SCRAP_MIME = "application/scrapbook.scrap.json+json"
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
IMAGE_SIMILARITY = 0.99  # mean pixel agreement for two images to count as the same


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-9
    atol: float = 0.0

    def close(self, a: float, b: float) -> bool:
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=self.rtol, abs_tol=self.atol)


@dataclass
class Output:
    """One normalised output: kind ('text', 'image', 'error') and its content."""

    kind: str
    content: str
    mime: str = "text/plain"


@dataclass
class Cell:
    index: int
    source: str
    outputs: list[Output] = field(default_factory=list)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def normalise(nb: dict[str, Any]) -> tuple[list[Cell], dict[str, Any]]:
    """Code cells with comparable outputs, and the recorded values (scraps) by name."""
    cells: list[Cell] = []
    scraps: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        normalised = Cell(index=len(cells), source=_text(cell.get("source", "")))
        streams: dict[str, str] = {}
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":  # stream chunks split arbitrarily: join per stream name
                streams[output.get("name", "stdout")] = streams.get(output.get("name", "stdout"), "") + _text(
                    output.get("text", "")
                )
            elif kind == "error":
                normalised.outputs.append(Output("error", f"{output.get('ename')}: {output.get('evalue')}"))
            elif kind in ("execute_result", "display_data"):
                data = output.get("data", {})
                if SCRAP_MIME in data:
                    scrap = data[SCRAP_MIME]
                    if isinstance(scrap, dict) and "name" in scrap:
                        scraps[str(scrap["name"])] = scrap.get("data")
                    continue
                if "image/png" in data:
                    normalised.outputs.append(Output("image", _text(data["image/png"]), "image/png"))
                elif "text/plain" in data:
                    normalised.outputs.append(Output("text", ADDRESS.sub("0x…", _text(data["text/plain"]))))
        for name in sorted(streams):
            normalised.outputs.insert(0, Output("text", ADDRESS.sub("0x…", streams[name]), f"stream/{name}"))
        cells.append(normalised)
    return cells, scraps


def compare_text(a: str, b: str, tol: Tolerance) -> str:
    if a == b:
        return SAME
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return DIFFERENT
    numbers_a = [float(n) for n in NUMBER.findall(a)]
    numbers_b = [float(n) for n in NUMBER.findall(b)]
    return WITHIN if all(tol.close(x, y) for x, y in zip(numbers_a, numbers_b, strict=True)) else DIFFERENT


def image_similarity(a_b64: str, b_b64: str) -> float:
    """1.0 for identical pixels, down to 0.0; images of different sizes are 0."""
    from PIL import Image, ImageChops, ImageStat

    first = Image.open(io.BytesIO(base64.b64decode(a_b64))).convert("RGB")
    second = Image.open(io.BytesIO(base64.b64decode(b_b64))).convert("RGB")
    if first.size != second.size:
        return 0.0
    mean_difference = sum(ImageStat.Stat(ImageChops.difference(first, second)).mean) / 3
    return 1.0 - mean_difference / 255.0


def compare_output(a: Output, b: Output, tol: Tolerance) -> str:
    if a.kind != b.kind:
        return DIFFERENT
    if a.kind == "image":
        if a.content == b.content:
            return SAME
        try:
            return WITHIN if image_similarity(a.content, b.content) >= IMAGE_SIMILARITY else DIFFERENT
        except Exception:  # undecodable image data: only byte equality can vouch for it
            return DIFFERENT
    return compare_text(a.content, b.content, tol)


def compare_values(a: Any, b: Any, tol: Tolerance) -> str:
    if a == b:
        return SAME
    if isinstance(a, bool) or isinstance(b, bool):
        return DIFFERENT
    if isinstance(a, int | float) and isinstance(b, int | float):
        return WITHIN if tol.close(float(a), float(b)) else DIFFERENT
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        results = [compare_values(x, y, tol) for x, y in zip(a, b, strict=True)]
        return DIFFERENT if DIFFERENT in results else (WITHIN if WITHIN in results else SAME)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        results = [compare_values(a[k], b[k], tol) for k in a]
        return DIFFERENT if DIFFERENT in results else (WITHIN if WITHIN in results else SAME)
    return DIFFERENT


def _worst(statuses: list[str]) -> str:
    for status in (DIFFERENT, WITHIN):
        if status in statuses:
            return status
    return SAME


def compare_cells(original: list[Cell], rerun: list[Cell], tol: Tolerance) -> list[dict[str, Any]]:
    """Per code cell: status and the outputs side by side where they differ."""
    rows = []
    for index in range(max(len(original), len(rerun))):
        a = original[index] if index < len(original) else None
        b = rerun[index] if index < len(rerun) else None
        if a is None or b is None or len(a.outputs) != len(b.outputs):
            status = DIFFERENT
        else:
            status = _worst([compare_output(x, y, tol) for x, y in zip(a.outputs, b.outputs, strict=True)])
        row: dict[str, Any] = {"cell": index, "status": status, "source": (a or b).source[:300] if (a or b) else ""}  # type: ignore[union-attr]
        if status != SAME:
            row["original"] = [o.content[:2000] for o in a.outputs if o.kind != "image"] if a else None
            row["rerun"] = [o.content[:2000] for o in b.outputs if o.kind != "image"] if b else None
        rows.append(row)
    return rows


def _numbers(cell_or_value: Any) -> list[float]:
    if isinstance(cell_or_value, Cell):
        return [float(n) for o in cell_or_value.outputs if o.kind == "text" for n in NUMBER.findall(o.content)]
    if isinstance(cell_or_value, bool) or not isinstance(cell_or_value, int | float):
        return []
    return [float(cell_or_value)]


def _inside_spread(original: list[float], reruns: list[list[float]]) -> bool:
    """Is each of the original's numbers within [min, max] of the reruns' (plus tolerance)?"""
    if not original or any(len(r) != len(original) for r in reruns):
        return False
    for position, value in enumerate(original):
        column = [r[position] for r in reruns]
        low, high = min(column), max(column)
        margin = (high - low) * 0.5 or abs(value) * 1e-9
        if not (low - margin <= value <= high + margin):
            return False
    return True


def compare_runs(original_nb: dict[str, Any], rerun_nbs: list[dict[str, Any]], tol: Tolerance) -> dict[str, Any]:
    """The evidence and verdict for an original and its reruns (all of which ran)."""
    original_cells, original_scraps = normalise(original_nb)
    reruns = [normalise(nb) for nb in rerun_nbs]
    per_rerun = [compare_cells(original_cells, cells, tol) for cells, _ in reruns]

    cells = []
    for index, row in enumerate(per_rerun[0] if per_rerun else []):
        statuses = [rows[index]["status"] if index < len(rows) else DIFFERENT for rows in per_rerun]
        merged = dict(row, status=_worst(statuses))
        if len(reruns) > 1 and index < len(original_cells):
            rerun_cells = [cells_[index] for cells_, _ in reruns if index < len(cells_)]
            among = {
                _worst([compare_output(x, y, tol) for x, y in zip(rerun_cells[0].outputs, c.outputs, strict=False)])
                for c in rerun_cells[1:]
                if len(c.outputs) == len(rerun_cells[0].outputs)
            }
            varies = DIFFERENT in among or any(len(c.outputs) != len(rerun_cells[0].outputs) for c in rerun_cells[1:])
            if varies:
                merged["flaky"] = True
                inside = _inside_spread(_numbers(original_cells[index]), [_numbers(c) for c in rerun_cells])
                merged["status"] = WITHIN if inside else DIFFERENT
                merged["original_inside_spread"] = inside
        cells.append(merged)

    values = []
    for name in sorted(set(original_scraps) | {n for _, s in reruns for n in s}):
        original_value = original_scraps.get(name)
        rerun_values = [s.get(name) for _, s in reruns]
        statuses = [compare_values(original_value, v, tol) for v in rerun_values]
        entry: dict[str, Any] = {
            "name": name,
            "original": original_value,
            "reruns": rerun_values,
            "status": _worst(statuses),
        }
        if len(rerun_values) > 1 and any(
            compare_values(rerun_values[0], v, tol) == DIFFERENT for v in rerun_values[1:]
        ):
            entry["flaky"] = True
            inside = _inside_spread(_numbers(original_value), [_numbers(v) for v in rerun_values])
            entry["status"] = WITHIN if inside else DIFFERENT
            entry["original_inside_spread"] = inside
        values.append(entry)

    statuses = [c["status"] for c in cells] + [v["status"] for v in values]
    verdict = {SAME: "reproduced", WITHIN: "reproduced_within_tolerance", DIFFERENT: "not_reproduced"}[_worst(statuses)]
    # Differing cells first: they are what a reviewer needs to see.
    order = {DIFFERENT: 0, WITHIN: 1, SAME: 2}
    cells.sort(key=lambda c: (order[c["status"]], c["cell"]))
    return {"verdict": verdict, "cells": cells, "values": values}


@dataclass(frozen=True)
class ArtifactFile:
    """One artifact of a run: its sha256, where its bytes are on this machine, and (for a
    rerun's `.npy`) the comparison the node already made against the original, if any."""

    sha256: str
    local_path: str
    node_comparison: dict[str, Any] = field(default_factory=dict)


def _array_evidence(original: ArtifactFile, rerun: ArtifactFile, tol: Tolerance) -> dict[str, Any]:
    """The node's comparison when it compared against these very bytes with this tolerance (it
    ran where the data is); otherwise compare here, with the same code."""
    done = rerun.node_comparison
    if (
        done.get("against_sha256") == original.sha256
        and done.get("rtol") == tol.rtol
        and done.get("atol") == tol.atol
        and done.get("status") in (SAME, WITHIN, DIFFERENT)
    ):
        return {**done, "where": "node"}
    import numpy

    compared = arrays.compare_npy(
        original.local_path, rerun.local_path, rtol=tol.rtol, atol=tol.atol, xp=numpy, device="cpu"
    )
    return {**compared, "against_sha256": original.sha256, "where": "site"}


def compare_artifacts(
    original: dict[str, ArtifactFile], reruns: list[dict[str, ArtifactFile]], tol: Tolerance
) -> list[dict[str, Any]]:
    """Artifacts by path: equal bytes are the same; `.npy` arrays compare numerically within
    tolerance (with the evidence: elements outside it, largest differences, where and on what
    device it ran); anything else that differs, or is missing on one side, is different."""
    rows = []
    for path in sorted(set(original) | {p for r in reruns for p in r}):
        statuses, evidence = [], []
        for rerun in reruns:
            if path not in original or path not in rerun:
                statuses.append(DIFFERENT)
            elif original[path].sha256 == rerun[path].sha256:
                statuses.append(SAME)
            elif path.endswith(".npy"):
                found = _array_evidence(original[path], rerun[path], tol)
                statuses.append(found["status"])
                evidence.append(found)
            else:
                statuses.append(DIFFERENT)
        row: dict[str, Any] = {"path": path, "status": _worst(statuses)}
        if evidence:
            row["arrays"] = evidence
        rows.append(row)
    return rows
