"""The notebook a submission is graded on, rebuilt from the instructor's source.

Every cell comes from the instructor's notebook, in its order: test cells from the source (with
their hidden tests), every other cell from the student version generated from it (locked cells,
tasks without their mark schemes, plain cells: nothing a student may not read). Only the answer
cells' sources (solution cells, matched by grade_id) come from the submission. So deleting, retyping or editing a test or
locked cell, or editing its metadata (points, grade_id), changes nothing: what the student did is
only noted for the instructor. A missing answer cell is graded as the unanswered stub the student
received (its tests fail; nothing crashes). Cells a student added are not graded (nbgrader keeps
them; here only answer cells carry the student's code, so nothing else can run before a test).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .nbgrader_format import is_grade, is_locked, is_solution, is_task, nbgrader_metadata, source_of

COMPARED_METADATA = ("grade", "solution", "locked", "task", "points", "grade_id")
# What an answer needs to reach into the kernel or the tests' tools, rather than answer: named for
# the instructor to review (honest answers rarely use any; reprolab_agent.grading undoes most).
SUSPICIOUS = (
    "get_ipython",
    "addaudithook",
    "sys.modules",
    "__builtins__",
    "builtins",
    "settrace",
    "setprofile",
    "setitimer",
    "signal.signal",
    "threading",
    "_thread",
    "ctypes",
    "gc.get_objects",
    "__eq__",
    "numpy.testing",
    "np.testing",
    "os._exit",
    "os.kill",
)


@dataclass
class Rebuilt:
    nb: dict[str, Any]
    flags: list[str] = field(default_factory=list)  # what the student changed, for the instructor
    unanswered: set[str] = field(default_factory=set)  # answer cells left as the stub they got


def grade_id(cell: Any) -> str:
    if not isinstance(cell, dict):
        return ""
    value = (nbgrader_metadata(cell) or {}).get("grade_id")
    return value if isinstance(value, str) else ""


def _by_grade_id(nb: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """A notebook's cells by grade_id (the first of each), and the grade_ids given twice."""
    found: dict[str, dict[str, Any]] = {}
    twice: set[str] = set()
    cells = nb.get("cells")
    for cell in cells if isinstance(cells, list) else []:
        key = grade_id(cell)
        if not key:
            continue
        if key in found:
            twice.add(key)
        else:
            found[key] = cell
    return found, twice


def _metadata(cell: dict[str, Any]) -> tuple[Any, ...]:
    meta = nbgrader_metadata(cell) or {}
    return tuple(meta.get(key) for key in COMPARED_METADATA)


def _clear(cell: dict[str, Any]) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None


def rebuild(source: dict[str, Any], given: dict[str, Any], submitted: dict[str, Any]) -> Rebuilt:
    """`source`: the instructor's notebook; `given`: the student version generated from it;
    `submitted`: what the student sent (already parsed as a notebook)."""
    theirs, twice = _by_grade_id(submitted)
    stubs, _ = _by_grade_id(given)
    result = Rebuilt(nb={})
    result.flags += [f"grade_id {key!r} appears more than once; the first cell was taken" for key in sorted(twice)]
    added = sum(1 for cell in submitted.get("cells") or [] if isinstance(cell, dict) and not grade_id(cell))
    added -= sum(1 for cell in given["cells"] if not grade_id(cell))
    if added > 0:
        result.flags.append(f"{added} cell(s) the student added were not graded (only answer cells are)")
    cells = []
    if len(given["cells"]) != len(source["cells"]):
        raise ValueError("the student version does not match its source notebook")
    for cell, student_cell in zip(source["cells"], given["cells"], strict=True):
        # Only a test's source is the instructor's own (hidden tests); nothing else of the
        # source (a task's mark scheme, a solution) is ever run where students can read it.
        new = copy.deepcopy(cell if is_grade(cell) and not is_solution(cell) else student_cell)
        key = grade_id(cell)
        mine, stub = theirs.get(key), stubs.get(key)
        if key and stub is not None and (is_solution(cell) or is_grade(cell) or is_locked(cell) or is_task(cell)):
            if mine is None:
                what = "answer" if is_solution(cell) else "task" if is_task(cell) else "test or read-only"
                result.flags.append(f"{what} cell {key!r} was deleted")
            else:
                if mine.get("cell_type") != cell.get("cell_type"):
                    result.flags.append(
                        f"cell {key!r} was changed from {cell.get('cell_type')} to {mine.get('cell_type')}"
                    )
                if _metadata(mine) != _metadata(stub):
                    result.flags.append(f"the nbgrader metadata of cell {key!r} was edited")
                if not is_solution(cell) and source_of(mine) != source_of(stub):
                    result.flags.append(f"read-only cell {key!r} was edited; the instructor's copy was graded")
            if is_solution(cell):
                answer = source_of(mine) if mine is not None else source_of(stub)
                new["source"] = answer
                if answer == source_of(stub):
                    result.unanswered.add(key)
                used = [name for name in SUSPICIOUS if name in answer]
                if used:
                    result.flags.append(f"answer cell {key!r} uses {', '.join(used)} (review)")
        new["source"] = source_of(new)  # one string: the student version stores lists of lines
        _clear(new)
        cells.append(new)
    result.nb = {
        "nbformat": source.get("nbformat", 4),
        "nbformat_minor": source.get("nbformat_minor", 5),
        "metadata": copy.deepcopy(source.get("metadata", {})),
        "cells": cells,
    }
    return result
