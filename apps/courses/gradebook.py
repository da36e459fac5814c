"""The gradebook: students by assignments, each cell the student's latest submission (the one that
counts, as in nbgrader, which keeps only the latest), with its score, lateness and state, and its
per-cell points; as JSON, and as CSV with the columns of `nbgrader export`.

A constant number of queries whatever the class size: students, assignments, the latest
submissions with their files and cells, each read once.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from .models import Assignment, CellGrade, CellOutcome, Course, CourseRole, Submission, SubmissionFile

# nbgrader's CsvExportPlugin, in its order.
NBGRADER_COLUMNS = (
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
)


@dataclass
class Entry:
    """One student's standing on one assignment."""

    submission: Submission | None
    cells: dict[str, float | None] = field(default_factory=dict)  # grade_id: points (None: ungraded)
    needs_manual_grading: bool = False
    flags: int = 0  # what the grader or the rebuild noted for review (tampering suspected, ...)

    def as_json(self, assignment: Assignment) -> dict[str, Any]:
        submission = self.submission
        if submission is None:
            return {"submission": None, "state": "missing", "score": 0.0, "max_score": _max(assignment)}
        raw = submission.raw_score
        return {
            "submission": submission.pk,
            "number": submission.number,
            "state": submission.state,
            "received_at": submission.received_at.isoformat(),
            "late_seconds": submission.late_seconds,
            "late_penalty_percent": submission.late_penalty_percent,
            "raw_score": raw,
            "late_penalty": _penalty_points(submission),
            "score": submission.score,
            "max_score": submission.max_score,
            "needs_manual_grading": self.needs_manual_grading,
            "flags": self.flags,
            "cells": self.cells,
        }


def _max(assignment: Assignment) -> float:
    return sum(f.points for f in assignment.files.all() if f.is_notebook)


def _penalty_points(submission: Submission) -> float | None:
    if submission.raw_score is None or submission.score is None:
        return None
    return submission.raw_score - submission.score


@dataclass
class Gradebook:
    assignments: list[Assignment]
    students: list[Any]  # users
    entries: dict[tuple[int, int], Entry]  # (student id, assignment id)

    def entry(self, student: Any, assignment: Assignment) -> Entry:
        return self.entries.get((student.pk, assignment.pk)) or Entry(None)

    def as_json(self) -> dict[str, Any]:
        return {
            "assignments": [
                {"name": a.name, "due_at": a.due_at.isoformat() if a.due_at else None, "max_score": _max(a)}
                for a in self.assignments
            ],
            "students": [
                {
                    "username": s.username,
                    "name": s.get_full_name(),
                    "assignments": {a.name: self.entry(s, a).as_json(a) for a in self.assignments},
                }
                for s in self.students
            ],
        }

    def csv(self) -> str:
        """One row per student and assignment, as `nbgrader export` writes it (a missing
        submission scores 0; the late penalty is in points)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=NBGRADER_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for assignment in self.assignments:
            for student in self.students:
                submission = self.entry(student, assignment).submission
                raw = (submission.raw_score or 0.0) if submission else 0.0
                penalty = (_penalty_points(submission) or 0.0) if submission else 0.0
                writer.writerow(
                    {
                        "assignment": assignment.name,
                        "duedate": assignment.due_at.isoformat() if assignment.due_at else "",
                        "timestamp": submission.received_at.isoformat() if submission else "",
                        "student_id": student.username,
                        "last_name": _cell(student.last_name),
                        "first_name": _cell(student.first_name),
                        "email": _cell(student.email),
                        "raw_score": raw,
                        "late_submission_penalty": penalty,
                        "score": raw - penalty,
                        "max_score": _max(assignment),
                    }
                )
        return out.getvalue()


def _cell(text: str) -> str:
    """A name as a CSV cell no spreadsheet runs as a formula (CWE-1236)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def latest_submissions(submissions: QuerySet[Submission]) -> QuerySet[Submission]:
    """Of `submissions`, each student's latest to each assignment (the one that counts)."""
    last = Submission.objects.filter(assignment=OuterRef("assignment"), student=OuterRef("student"))
    return submissions.filter(number=Subquery(last.order_by("-number").values("number")[:1]))


def gradebook(course: Course) -> Gradebook:
    assignments = list(course.assignments.prefetch_related("files").order_by("due_at", "name"))
    students = [
        m.user
        for m in course.memberships.filter(role=CourseRole.STUDENT).select_related("user").order_by("user__username")
    ]
    last = Submission.objects.filter(assignment=OuterRef("assignment"), student=OuterRef("student"))
    submissions = list(
        Submission.objects.filter(
            assignment__course=course, number=Subquery(last.order_by("-number").values("number")[:1])
        )
    )
    cells: dict[int, list[CellGrade]] = {}
    for cell in CellGrade.objects.filter(file__submission__in=submissions).select_related("file"):
        cells.setdefault(cell.file.submission_id, []).append(cell)
    file_flags: dict[int, int] = {}
    for submission_id, flags in SubmissionFile.objects.filter(submission__in=submissions).values_list(
        "submission_id", "flags"
    ):
        file_flags[submission_id] = file_flags.get(submission_id, 0) + len(flags or [])
    entries = {}
    for submission in submissions:
        graded = cells.get(submission.pk, [])
        entries[(submission.student_id, submission.assignment_id)] = Entry(
            submission,
            cells={f"{c.file.path}:{c.grade_id}": c.points for c in graded},
            needs_manual_grading=any(c.outcome == CellOutcome.NEEDS_GRADING for c in graded),
            flags=file_flags.get(submission.pk, 0) + sum(len(c.flags or []) for c in graded),
        )
    return Gradebook(assignments, students, entries)
