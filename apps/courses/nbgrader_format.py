"""nbgrader's assignment format (cell metadata schema version 3), read and written by our own code:
validating an instructor's source notebook, and generating the student version exactly as
`nbgrader generate_assignment` does (tests/courses compare the two cell by cell with nbgrader
itself, installed in a virtual environment of its own).

The student version is made by nbgrader's steps, in its order: lock cells, replace solutions by
the language's stub, clear outputs, checksum, remove hidden tests and mark schemes, checksum again
(a test cell's checksum is over what the student sees).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from reprolab_agent.grading import HIDDEN_TESTS, replace_regions

SCHEMA_VERSION = 3
METADATA_KEYS = ("schema_version", "grade", "solution", "locked", "task", "grade_id", "points", "checksum", "cell_type")
GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]*$")
CODE_STUBS = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
    "R": "# YOUR CODE HERE\nfail()",
    "matlab": "% YOUR CODE HERE\nerror('No Answer Given!')",
    "octave": "% YOUR CODE HERE\nerror('No Answer Given!')",
    "sas": "/* YOUR CODE HERE */\n %notImplemented;",
    "java": "// YOUR CODE HERE",
}
TEXT_STUB = "YOUR ANSWER HERE"
SOLUTION = ("BEGIN SOLUTION", "END SOLUTION")
MARK_SCHEME = ("BEGIN MARK SCHEME", "END MARK SCHEME")
OUTPUT_METADATA = ("collapsed", "scrolled")  # nbconvert's ClearOutputPreprocessor drops these


@dataclass(frozen=True)
class GradedCell:
    """A cell the gradebook knows: an autograder test, a manually graded answer or task, an
    autograded answer (solution, no points) or a read-only cell."""

    grade_id: str
    kind: str  # "test", "manual", "task", "answer", "locked"
    points: float
    index: int

    def as_json(self) -> dict[str, Any]:
        return {"grade_id": self.grade_id, "kind": self.kind, "points": self.points, "index": self.index}


def nbgrader_metadata(cell: dict[str, Any]) -> dict[str, Any] | None:
    metadata = cell.get("metadata")
    found = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return found if isinstance(found, dict) else None


def _flag(cell: dict[str, Any], key: str) -> bool:
    meta = nbgrader_metadata(cell)
    return bool(meta and meta.get(key, False))


def is_grade(cell: dict[str, Any]) -> bool:
    return _flag(cell, "grade")


def is_solution(cell: dict[str, Any]) -> bool:
    return _flag(cell, "solution")


def is_task(cell: dict[str, Any]) -> bool:
    return _flag(cell, "task")


def is_locked(cell: dict[str, Any]) -> bool:
    """As nbgrader: a test (grade, not solution) is locked whatever its flag says."""
    if nbgrader_metadata(cell) is None or is_solution(cell):
        return False
    return is_grade(cell) or _flag(cell, "locked")


def source_of(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _problem(index: int, cell: dict[str, Any], message: str) -> ValidationError:
    meta = nbgrader_metadata(cell) or {}
    named = f" ({meta['grade_id']})" if isinstance(meta.get("grade_id"), str) and meta.get("grade_id") else ""
    return ValidationError({"files": f"cell {index + 1}{named}: {message}"})


def _region_lines(source: str, markers: tuple[str, str]) -> tuple[bool, bool]:
    """(has a region, is well formed: no nesting, every begin ended)."""
    inside = found = False
    for line in source.split("\n"):
        if markers[0] in line:
            if inside:
                return True, False
            inside = found = True
        elif markers[1] in line:
            inside = False
    return found, not inside


def validate(nb: dict[str, Any], *, name: str = "notebook") -> list[GradedCell]:
    """The notebook's graded cells, or a ValidationError naming the cell and the problem."""
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise ValidationError({"files": f"{name}: not a notebook (no cells)."})
    graded: list[GradedCell] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise ValidationError({"files": f"{name}: cell {index + 1} is not a cell."})
        meta = nbgrader_metadata(cell)
        source = source_of(cell)
        try:
            json.dumps(cell, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate, escaped in the file's JSON
            raise _problem(index, cell, "holds text that is not valid Unicode") from None
        for markers, allowed, what in (
            (SOLUTION, is_solution(cell), "solution markers in a cell that is not a solution cell"),
            (HIDDEN_TESTS, is_grade(cell), "hidden-test markers in a cell that is not a grade cell"),
            (MARK_SCHEME, is_task(cell), "mark-scheme markers in a cell that is not a task cell"),
        ):
            found, well_formed = _region_lines(source, markers)
            if found and not well_formed:
                raise _problem(index, cell, f"a '### {markers[0]}' region is nested or never ended")
            if found and not allowed:
                raise _problem(index, cell, what)
        if meta is None:
            continue
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise _problem(index, cell, f"unknown nbgrader schema version {version!r} (ReproLab reads version 3)")
        unknown = sorted(str(key) for key in meta if key not in METADATA_KEYS)
        if unknown:  # nbgrader's schema allows no other keys either
            raise _problem(index, cell, f"unknown nbgrader metadata key {unknown[0][:50]!r}")
        for key in ("grade", "solution", "locked", "task"):
            if key in meta and not isinstance(meta[key], bool):
                raise _problem(index, cell, f"'{key}' must be true or false")
        grade, solution, locked, task = is_grade(cell), is_solution(cell), _flag(cell, "locked"), is_task(cell)
        grade_id = meta.get("grade_id")
        if grade or solution or locked or task:
            if not isinstance(grade_id, str) or not grade_id:
                raise _problem(index, cell, "empty or missing grade_id")
            if not GRADE_ID.match(grade_id) or len(grade_id) > 200:
                raise _problem(index, cell, "a grade_id is letters, digits, '_' and '-'")
        points = meta.get("points")
        bad_points = isinstance(points, bool) or not isinstance(points, int | float) or not 0 <= points <= 1e6
        if (grade or task) and bad_points:
            raise _problem(index, cell, "a grade cell needs points (a number, 0 or more)")
        if task and cell.get("cell_type") != "markdown":
            raise _problem(index, cell, "a task cell must be markdown")
        if not task and cell.get("cell_type") == "markdown" and grade != solution:
            raise _problem(index, cell, "a markdown answer must be both a grade and a solution cell")
        if not (grade or solution or locked or task):
            continue
        assert isinstance(grade_id, str)
        if (grade or solution or locked) and grade_id in seen:
            raise _problem(index, cell, f"duplicate grade_id (cell {seen[grade_id] + 1} has it too)")
        seen[grade_id] = index
        if task:
            kind = "task"
        elif grade and solution:
            kind = "manual"
        elif grade:
            kind = "test"
        elif solution:
            kind = "answer"
        else:
            kind = "locked"
        graded.append(GradedCell(grade_id, kind, float(points or 0) if grade or task else 0.0, index))
    if not any(cell.kind in ("test", "manual", "task") for cell in graded):
        raise ValidationError({"files": f"{name}: no graded cell (nbgrader metadata with points)."})
    return graded


def checksum(cell: dict[str, Any]) -> str:
    """nbgrader's checksum of a cell (how it notices edited cells)."""
    meta = nbgrader_metadata(cell) or {}
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(source_of(cell).encode())
    digest.update(str(cell.get("cell_type")).encode())
    digest.update(str(is_grade(cell)).encode())
    digest.update(str(is_solution(cell)).encode())
    digest.update(str(is_locked(cell)).encode())
    digest.update(str(meta.get("grade_id")).encode())
    if is_grade(cell):
        digest.update(str(float(meta["points"])).encode())
    return digest.hexdigest()


def _set_source(cell: dict[str, Any], source: str) -> None:
    cell["source"] = source


def _checksums(nb: dict[str, Any]) -> None:
    for cell in nb["cells"]:
        if is_grade(cell) or is_solution(cell) or is_locked(cell):
            meta = cell["metadata"]["nbgrader"]
            meta["checksum"] = checksum(cell)
            meta["cell_type"] = cell["cell_type"]


def student_version(nb: dict[str, Any]) -> dict[str, Any]:
    """What students get: nbgrader generate_assignment's output for this source (validated)."""
    nb = copy.deepcopy(nb)
    language = (nb.get("metadata", {}).get("kernelspec") or {}).get("language", "python")
    if not isinstance(language, str) or language not in CODE_STUBS:
        raise ValidationError({"files": f"No solution stub for the language {str(language)[:50]!r}."})
    for cell in nb["cells"]:
        cell["source"] = source_of(cell)
        metadata = cell.setdefault("metadata", {})
        if is_solution(cell):  # LockCells
            metadata["deletable"] = False
        elif is_grade(cell) or is_locked(cell):
            metadata["deletable"] = False
            metadata["editable"] = False
        stub = CODE_STUBS[language] if cell.get("cell_type") == "code" else TEXT_STUB
        source, replaced = replace_regions(cell["source"], SOLUTION, stub)  # ClearSolutions
        if is_solution(cell) and not replaced:
            source = stub
        _set_source(cell, source)
        if cell.get("cell_type") == "code":  # ClearOutput
            cell["outputs"] = []
            cell["execution_count"] = None
            for field in OUTPUT_METADATA:
                metadata.pop(field, None)
    _checksums(nb)
    for cell in nb["cells"]:
        _set_source(cell, replace_regions(cell["source"], HIDDEN_TESTS, None)[0])  # ClearHiddenTests
        if is_task(cell):  # ClearMarkScheme
            _set_source(cell, replace_regions(cell["source"], MARK_SCHEME, None)[0])
    _checksums(nb)
    nb.get("metadata", {}).pop("celltoolbar", None)
    return nb
