"""Grading by hand: points and comments on manually graded cells, overrides of autograded tests
(with a reason), the grading queue (students anonymous by default), and regrade requests. Every
change of a score is kept in the cell's GradeChange log; the submission's score follows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User

from .grading import settle_submission
from .models import (
    CellGrade,
    CellOutcome,
    FileGradingState,
    GradeChange,
    RegradeRequest,
    RegradeState,
    Submission,
    SubmissionFile,
)

MAX_TEXT = 10_000


def cell_of(submission: Submission, grade_id: str, notebook: str = "") -> CellGrade:
    """The submission's graded cell `grade_id` (in `notebook` when two notebooks have one)."""
    found = CellGrade.objects.filter(file__submission=submission, grade_id=grade_id.replace("\x00", ""))
    if notebook:
        found = found.filter(file__path=notebook.replace("\x00", ""))
    cells = list(found.select_related("file")[:2])
    if not cells:
        raise ValidationError({"grade_id": f"This submission has no graded cell {grade_id[:200]!r} (yet)."})
    if len(cells) > 1:
        raise ValidationError({"notebook": "Two notebooks have this cell: name the notebook."})
    return cells[0]


def _points(value: Any, cell: CellGrade) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError({"points": "Points are a number."})
    if not 0 <= value <= cell.max_points:
        raise ValidationError({"points": f"Points are between 0 and {cell.max_points:g} for this cell."})
    return float(value)


@transaction.atomic
def grade_cell(
    *, cell: CellGrade, grader: User, points: Any = None, comment: str | None = None, reason: str = ""
) -> CellGrade:
    """Set a cell's points (and the comment its student reads). An autograded test's points are
    an override: they need a reason. Each change of points is logged."""
    cell = CellGrade.objects.select_for_update().select_related("file").get(pk=cell.pk)
    if cell.file.grading_state != FileGradingState.GRADED:
        raise ValidationError({"grade_id": "This notebook is not graded yet."})
    if points is not None:
        new = _points(points, cell)
        if cell.kind == "test" and not reason.strip():
            raise ValidationError({"reason": "Overriding an autograded test needs a reason (it is kept in the log)."})
        old = cell.points
        cell.manual_points = new
        cell.outcome = CellOutcome.GRADED
        cell.graded_by = grader
        GradeChange.objects.create(
            cell=cell, changed_by=grader, old_points=old, new_points=new, reason=reason[:MAX_TEXT]
        )
    if comment is not None:
        cell.comment = comment[:MAX_TEXT]
    cell.save()
    settle_submission(cell.file.submission_id)
    return cell


@dataclass(frozen=True)
class QueueItem:
    submission: Submission
    file: SubmissionFile
    cell: CellGrade

    def as_json(self, *, names: bool) -> dict[str, Any]:
        return {
            "submission": self.submission.pk,
            "student": self.submission.student.username if names else None,
            "notebook": self.file.path,
            "grade_id": self.cell.grade_id,
            "kind": self.cell.kind,
            "max_points": self.cell.max_points,
        }


def grading_queue(submissions: Any) -> list[QueueItem]:
    """Cells waiting for a grader in the latest submissions, by cell then submission (graders
    usually grade one question across everyone)."""
    cells = (
        CellGrade.objects.filter(outcome=CellOutcome.NEEDS_GRADING, file__submission__in=submissions)
        .select_related("file__submission__student")
        .order_by("file__path", "grade_id", "file__submission_id")
    )
    return [QueueItem(cell.file.submission, cell.file, cell) for cell in cells]


@transaction.atomic
def request_regrade(*, cell: CellGrade, student: User, message: str) -> RegradeRequest:
    if not message.strip():
        raise ValidationError({"message": "Say what you would like looked at again."})
    if cell.file.submission.student_id != student.pk:
        raise ValidationError({"grade_id": "Only the student who submitted it may ask for a regrade."})
    if RegradeRequest.objects.filter(cell=cell, state=RegradeState.OPEN).exists():
        raise ValidationError({"message": "A regrade request for this cell is open already."})
    return RegradeRequest.objects.create(cell=cell, student=student, message=message[:MAX_TEXT])


@transaction.atomic
def answer_regrade(*, request: RegradeRequest, grader: User, answer: str, points: Any = None) -> RegradeRequest:
    """Answer a regrade request, changing the cell's points or not (logged as the answer)."""
    request = RegradeRequest.objects.select_for_update().select_related("cell").get(pk=request.pk)
    if request.state != RegradeState.OPEN:
        raise ValidationError({"answer": "This request is answered already."})
    if not answer.strip():
        raise ValidationError({"answer": "Answer the student."})
    if points is not None:
        grade_cell(cell=request.cell, grader=grader, points=points, reason=f"regrade request: {answer}")
    request.state = RegradeState.ANSWERED
    request.answer = answer[:MAX_TEXT]
    request.answered_by = grader
    request.answered_at = timezone.now()
    request.save()
    return request
