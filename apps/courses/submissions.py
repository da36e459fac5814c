"""Students' submissions: immutable, timed by the server, late penalties by the assignment's
policy (and the student's extension), bounded by its maximum number of submissions."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from reprolab_agent import protocol

from apps.accounts.models import User
from apps.compute.models import RunArtifact
from apps.compute.selectors import final_artifacts
from apps.core.hashing import store_blob
from apps.projects.validation import clean_relative_path, parse_notebook

from . import grading
from .assignments import Incoming
from .models import Assignment, Extension, LatePolicy, ResultsVisibility, Submission, SubmissionFile

DAY_SECONDS = 24 * 3600
logger = logging.getLogger(__name__)


def due_for(assignment: Assignment, student: User) -> datetime | None:
    extension = Extension.objects.filter(assignment=assignment, student=student).first()
    return extension.due_at if extension else assignment.due_at


def lateness(assignment: Assignment, due_at: datetime | None, received_at: datetime) -> tuple[int, float]:
    """(seconds late past the grace period, penalty in percent) for work received then."""
    if due_at is None:
        return 0, 0.0
    late = (received_at - due_at - timedelta(minutes=assignment.grace_minutes)).total_seconds()
    if late <= 0:
        return 0, 0.0
    seconds = math.ceil(late)
    if assignment.late_policy == LatePolicy.ZERO:
        return seconds, 100.0
    if assignment.late_policy == LatePolicy.PERCENT_PER_DAY:
        days = math.ceil(seconds / DAY_SECONDS)
        return seconds, min(assignment.late_cap_percent, assignment.late_percent_per_day * days)
    return seconds, 0.0


def _check_room(assignment: Assignment, student: User) -> int:
    """The student's submissions so far; a ValidationError when they have used them all."""
    count = Submission.objects.filter(assignment=assignment, student=student).count()
    if assignment.max_submissions is not None and count >= assignment.max_submissions:
        raise ValidationError(
            {"files": f"You have used all {assignment.max_submissions} submissions of this assignment."}
        )
    return count


def submit(*, assignment: Assignment, student: User, files: Sequence[Incoming]) -> Submission:
    """A new submission, numbered after the student's earlier ones. Only the assignment's
    notebooks are taken (by name); each must be a notebook; nothing is graded from anything else."""
    _check_room(assignment, student)  # before anything is stored (and again, in turn, below)
    expected = {f.path for f in assignment.files.filter(is_notebook=True)}
    prepared = []
    seen: set[str] = set()
    for incoming in files:
        path = clean_relative_path(incoming.path, field="files")
        if path not in expected:
            raise ValidationError(
                {"files": f"{path!r} is not a notebook of this assignment (expected {', '.join(sorted(expected))})."}
            )
        if path in seen:
            raise ValidationError({"files": f"{path!r} is given twice."})
        seen.add(path)
        incoming.content.seek(0)
        try:
            nb = parse_notebook(incoming.content.read())
            json.dumps(nb, ensure_ascii=False).encode()
        except ValidationError as error:
            raise ValidationError({"files": f"{path}: {' '.join(error.messages)}"}) from None
        except UnicodeEncodeError:  # a lone surrogate, escaped in the file's JSON: not text
            raise ValidationError({"files": f"{path}: the notebook holds text that is not valid Unicode."}) from None
        incoming.content.seek(0)
        prepared.append((path, store_blob(incoming.content)))
    if not prepared:
        raise ValidationError({"files": "Submit at least one notebook of the assignment."})
    received_at = timezone.now()  # the server's clock decides lateness, never the client's
    with transaction.atomic():
        Assignment.objects.select_for_update().filter(pk=assignment.pk).first()  # numbers taken in turn
        count = _check_room(assignment, student)
        late_seconds, penalty = lateness(assignment, due_for(assignment, student), received_at)
        submission = Submission.objects.create(
            assignment=assignment,
            student=student,
            number=count + 1,
            received_at=received_at,
            late_seconds=late_seconds,
            late_penalty_percent=penalty,
        )
        SubmissionFile.objects.bulk_create(
            SubmissionFile(
                submission=submission, path=path, sha256=blob.sha256, size=blob.size, storage_name=blob.storage_name
            )
            for path, blob in prepared
        )
        submission_id = submission.pk
        transaction.on_commit(lambda: queue_safely(submission_id))
    return submission


def queue_safely(submission_id: int) -> None:
    """Queue the submission's grading now; if that fails, the reconciler (courses.reconcile_grading)
    queues it later: the submission itself is safe already."""
    try:
        grading.queue_grading(submission_id)
    except Exception:
        logger.exception("could not queue the grading of submission %s; the reconciler will", submission_id)


def results_visible(submission: Submission, *, staff: bool) -> bool:
    """Whether the reader may see the submission's score, per-cell results and feedback: teaching
    staff always; its student by the assignment's results_visibility."""
    if staff:
        return True
    assignment = submission.assignment
    if assignment.results_visibility == ResultsVisibility.IMMEDIATELY:
        return True
    if assignment.results_visibility == ResultsVisibility.AFTER_DUE:
        due = due_for(assignment, submission.student)  # and its grace period: work still counts then
        return due is None or timezone.now() >= due + timedelta(minutes=assignment.grace_minutes)
    return assignment.grades_released_at is not None


def feedback_artifact(file: SubmissionFile) -> RunArtifact | None:
    """The feedback notebook its grading run left (the students' view, without hidden tests)."""
    if file.run is None:
        return None
    return final_artifacts(file.run).filter(path=protocol.FEEDBACK_ARTIFACT).first()
