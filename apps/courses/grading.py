"""Autograding on nodes: each submitted notebook becomes a run of kind grading in the course's
grading project, and its results become cell grades when the run ends.

Trust: the grading project is private; its members are the course's instructors (maintainers,
so nodes they register for it may grade: apps/compute/trust.py) and TAs (viewers: they watch
runs live, their nodes never grade). A student is never a member, so a student's node never
takes a grading run, and no student can read a graded notebook (it holds the hidden tests).
Staff-shared nodes grade too, as they run everyone's work.

The node runs the notebook as reprolab_agent.grading describes; this module rebuilds what it
runs (apps.courses.rebuild) and scores what it saw (apps.courses.scoring). Both steps are called
when their moment comes (a submission committed, a run finished) and again by a beat
reconciler for anything a crash left undone, so neither is ever lost.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from reprolab_agent import protocol
from reprolab_agent.grading import has_hidden_tests, plain

from apps.compute.models import FINAL_STATES, Run, RunKind, RunState
from apps.compute.selectors import final_artifacts
from apps.compute.services import run_submit
from apps.core.inputs import loads_bounded
from apps.projects.models import DatasetVersion, Membership, Project, Role
from apps.projects.services import IncomingFile, dataset_add_files, dataset_create, notebook_upload

from . import scoring
from .models import (
    STAFF_ROLES,
    Assignment,
    AssignmentFile,
    CellGrade,
    CellOutcome,
    Course,
    CourseRole,
    FileGradingState,
    Submission,
    SubmissionFile,
    SubmissionState,
)
from .nbgrader_format import HIDDEN_TESTS, source_of
from .rebuild import grade_id, rebuild

logger = logging.getLogger(__name__)

GRADING_ROLES = {CourseRole.INSTRUCTOR: Role.MAINTAINER, CourseRole.TA: Role.VIEWER}
MAX_FEEDBACK_BYTES = 64 * 2**20  # a feedback notebook read back to find the tests' messages


# --- the grading project ------------------------------------------------------------------------------
def grading_project_for(course: Course) -> Project:
    """The course's grading project, made on first need, its members kept as the course's staff."""
    if course.grading_project_id is not None:
        return course.grading_project  # type: ignore[return-value]
    with transaction.atomic():
        locked = Course.objects.select_for_update().get(pk=course.pk)
        if locked.grading_project_id is None:
            locked.grading_project = _new_project(locked)
            locked.save(update_fields=["grading_project"])
            sync_staff(locked)
    course.grading_project = locked.grading_project
    return course.grading_project  # type: ignore[return-value]


def _new_project(course: Course) -> Project:
    base = f"grading-{course.slug}"[:90]
    for attempt in range(1, 100):
        slug = base if attempt == 1 else f"{base}-{attempt}"
        try:
            with transaction.atomic():
                return Project.objects.create(
                    slug=slug,
                    name=f"Grading: {course.title}"[:200],
                    description=f"Autograding runs of the course {course.slug}. Its members are the course's staff.",
                    visibility="private",
                )
        except IntegrityError:  # a project of that slug exists: try the next
            continue
    raise RuntimeError(f"no free project slug for grading {course.slug}")


def sync_staff(course: Course) -> None:
    """Make the grading project's members exactly the course's staff, in their grading roles."""
    # Read afresh: the caller's copy of the course may predate its grading project.
    project_id = Course.objects.filter(pk=course.pk).values_list("grading_project_id", flat=True).first()
    if project_id is None:
        return
    wanted = {
        m.user_id: GRADING_ROLES[CourseRole(m.role)]
        for m in course.memberships.filter(role__in=STAFF_ROLES).only("user_id", "role")
    }
    with transaction.atomic():
        Membership.objects.filter(project_id=project_id).exclude(user_id__in=wanted).delete()
        current = dict(Membership.objects.filter(project_id=project_id).values_list("user_id", "role"))
        for user_id, role in wanted.items():
            if user_id not in current:
                Membership.objects.create(project_id=project_id, user_id=user_id, role=role)
            elif current[user_id] != role:
                Membership.objects.filter(project_id=project_id, user_id=user_id).update(role=role)


# --- queueing --------------------------------------------------------------------------------------------
def _read_json(storage_name: str) -> dict[str, Any]:
    with default_storage.open(storage_name, "rb") as blob:
        value = loads_bounded(blob.read())
    if not isinstance(value, dict):
        raise ValueError(f"{storage_name} is not a JSON object")
    return value


def assignment_data(assignment: Assignment, project: Project) -> list[DatasetVersion]:
    """The assignment's data files as a dataset version of the grading project (named after the
    assignment), placed beside the notebook in every grading run; none when it has none."""
    data = list(assignment.files.filter(is_notebook=False))
    if not data:
        return []
    dataset = project.datasets.filter(name=assignment.name).select_related("latest_version").first()
    if dataset is None:
        dataset = dataset_create(project=project, name=assignment.name, creator=None)
    elif dataset.latest_version is not None and set(dataset.latest_version.files.values_list("path", "sha256")) == {
        (f.path, f.sha256) for f in data
    }:
        return [dataset.latest_version]  # as every submission before: nothing to store again
    handles = [default_storage.open(f.storage_name, "rb") for f in data]
    try:
        files = [IncomingFile(path=f.path, content=handle) for f, handle in zip(data, handles, strict=True)]
        version, _ = dataset_add_files(dataset=dataset, files=files, uploader=None, message="assignment data")
    finally:
        for handle in handles:
            handle.close()
    return [version]


def queue_grading(submission_id: int) -> None:
    """Rebuild each of the submission's notebooks and queue its grading run. A file that cannot
    be prepared fails with the reason (instructors see it and may regrade); the others go on."""
    submission = Submission.objects.select_related("assignment__course").get(pk=submission_id)
    assignment = submission.assignment
    project = grading_project_for(assignment.course)
    sources = {f.path: f for f in assignment.files.filter(is_notebook=True)}
    data = assignment_data(assignment, project)
    for file in submission.files.filter(run__isnull=True, grading_state=FileGradingState.QUEUED):
        try:
            queue_file(file, sources[file.path], project=project, data=data)
        except Exception as error:  # a stored blob unreadable, a bad source: this file only
            logger.exception("could not queue the grading of submission file %s", file.pk)
            _fail_file(file, f"Could not prepare the graded notebook: {type(error).__name__}: {error}")
    Submission.objects.filter(pk=submission.pk, state=SubmissionState.RECEIVED).update(state=SubmissionState.GRADING)
    settle_submission(submission.pk)


def queue_file(file: SubmissionFile, source: AssignmentFile, *, project: Project, data: list[DatasetVersion]) -> Run:
    rebuilt = rebuild(
        _read_json(source.storage_name), _read_json(source.student_storage_name), _read_json(file.storage_name)
    )
    submission = file.submission
    path = f"{submission.assignment.name}/submission-{submission.pk}/{file.path}"
    content = io.BytesIO(json.dumps(rebuilt.nb, ensure_ascii=False).encode())
    version = notebook_upload(
        project=project,
        path=path,
        content=content,
        uploader=None,
        message=f"submission {submission.pk}",
        prerender=False,  # instructors open a few; rendering each in advance costs the graders' CPU
    ).version
    with transaction.atomic():
        # Taken in turn: the commit hook and a reconciler pass must not both queue this file.
        if not SubmissionFile.objects.select_for_update().filter(pk=file.pk, run__isnull=True).exists():
            return Run.objects.get(graded_file__pk=file.pk)
        run = run_submit(
            project=project,
            user=None,
            notebook_version=version,
            dataset_versions=data,
            # Each execution gets the limit: with hidden tests there are two (feedback, graded).
            timeout_seconds=settings.REPROLAB_GRADING_TIMEOUT * (2 if has_hidden_tests(rebuilt.nb) else 1),
            kind=RunKind.GRADING,
        )
        file.run = run
        file.flags = rebuilt.flags
        file.save(update_fields=["run", "flags"])
        _manual_cells(file, source, rebuilt.unanswered)
    return run


def _manual_cells(file: SubmissionFile, source: AssignmentFile, unanswered: set[str]) -> None:
    """Rows for the cells a person grades: an answer left as its stub scores 0 ("No response.",
    as nbgrader); the others wait for a grader."""
    for cell in source.graded_cells:
        if cell["kind"] not in ("manual", "task"):
            continue
        blank = cell["kind"] == "manual" and cell["grade_id"] in unanswered
        if CellGrade.objects.filter(file=file, grade_id=cell["grade_id"], manual_points__isnull=False).exists():
            continue  # graded by a person before a regrade: theirs stands
        CellGrade.objects.update_or_create(
            file=file,
            grade_id=cell["grade_id"],
            defaults={
                "kind": cell["kind"],
                "max_points": cell["points"],
                "auto_points": 0.0 if blank else None,
                "outcome": CellOutcome.NO_RESPONSE if blank else CellOutcome.NEEDS_GRADING,
                "message": "No response." if blank else "",
            },
        )


def _fail_file(file: SubmissionFile, reason: str) -> None:
    file.grading_state = FileGradingState.FAILED
    file.grading_error = reason[:10_000]
    file.graded_at = timezone.now()
    file.save(update_fields=["grading_state", "grading_error", "graded_at"])


def regrade(submission: Submission) -> Submission:
    """Grade the submission again, every notebook on a new run (a lost run, a node at fault, a
    test the instructor fixed): autograded results are replaced; a person's points (a manual
    grade, an override) stay, and so does the log of changes."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().get(pk=submission.pk)
        SubmissionFile.objects.filter(submission=submission).update(
            run=None, grading_state=FileGradingState.QUEUED, grading_error="", graded_at=None, flags=[]
        )
        # Cell grades stay (with their log): the new runs' results replace the autograder's part.
        submission.state = SubmissionState.RECEIVED
        submission.raw_score = submission.score = submission.graded_at = None
        submission.save(update_fields=["state", "raw_score", "score", "graded_at"])
    queue_grading(submission.pk)
    submission.refresh_from_db()
    return submission


# --- recording --------------------------------------------------------------------------------------------
def record_grading(run_id: int) -> None:
    """Turn a finished grading run into the file's cell grades, then settle its submission."""
    file = (
        SubmissionFile.objects.select_related("run", "submission__assignment")
        .filter(run_id=run_id, grading_state=FileGradingState.QUEUED)
        .first()
    )
    if file is None or file.run is None or file.run.state not in FINAL_STATES:
        return
    run = file.run
    report = run.grading_report if isinstance(run.grading_report, dict) else {}
    if run.state in (RunState.LOST, RunState.CANCELLED) or not isinstance(report.get("cells"), list):
        _fail_file(file, run.error or f"The grading run ended {run.state} without a report.")
    else:
        _record_tests(file, run, report["cells"])
    settle_submission(file.submission_id)


def _record_tests(file: SubmissionFile, run: Run, observations: list[dict[str, Any]]) -> None:
    source = file.submission.assignment.files.get(path=file.path)
    seen: dict[str, dict[str, Any]] = {}
    for observation in observations:
        seen.setdefault(str(observation.get("grade_id", "")), observation)
    feedback_errors = _feedback_errors(run)
    hidden = _hidden_tests(source)
    with transaction.atomic():
        for cell in source.graded_cells:
            if cell["kind"] != "test":
                continue
            key = cell["grade_id"]
            result = scoring.score_test(seen.get(key), float(cell["points"]))
            message = scoring.student_message(
                result.outcome,
                hidden=key in hidden,
                feedback_error=feedback_errors.get(key),
                timeout_seconds=settings.REPROLAB_GRADING_CELL_TIMEOUT,
            )
            by_hand = CellGrade.objects.filter(file=file, grade_id=key, manual_points__isnull=False).exists()
            CellGrade.objects.update_or_create(
                file=file,
                grade_id=key,
                defaults={
                    "kind": "test",
                    "max_points": cell["points"],
                    "auto_points": result.points,
                    "outcome": CellOutcome.GRADED if by_hand else result.outcome,  # an override stands
                    "hidden": key in hidden,
                    "message": message,
                    "detail": result.detail[:10_000],
                    "flags": result.flags,
                },
            )
        file.grading_state = FileGradingState.GRADED
        file.graded_at = timezone.now()
        file.grading_error = run.error if run.state != RunState.SUCCEEDED else ""
        file.save(update_fields=["grading_state", "graded_at", "grading_error"])


def _hidden_tests(source: AssignmentFile) -> set[str]:
    nb = _read_json(source.storage_name)
    return {
        grade_id(cell)
        for cell in nb.get("cells", [])
        if isinstance(cell, dict) and HIDDEN_TESTS[0] in source_of(cell) and grade_id(cell)
    }


def _feedback_errors(run: Run) -> dict[str, tuple[str, str]]:
    """Each test's error in the feedback notebook (the execution without hidden tests)."""
    artifact = final_artifacts(run).filter(path=protocol.FEEDBACK_ARTIFACT).first()
    if artifact is None or artifact.size > MAX_FEEDBACK_BYTES:
        return {}
    try:
        nb = _read_json(artifact.storage_name)
    except (OSError, ValueError):
        return {}
    errors: dict[str, tuple[str, str]] = {}
    for cell in nb.get("cells", []) if isinstance(nb.get("cells"), list) else []:
        key = grade_id(cell)
        outputs = cell.get("outputs") if isinstance(cell, dict) else None
        for output in outputs if isinstance(outputs, list) else []:
            if key and isinstance(output, dict) and output.get("output_type") == "error":
                # The student's code wrote it: text PostgreSQL stores (no NUL, valid Unicode).
                errors.setdefault(key, (plain(output.get("ename"), 200), plain(output.get("evalue"), 1000)))
    return errors


def settle_submission(submission_id: int) -> None:
    """Once every file is graded or failed: the submission's state and score (points over all of
    the assignment's notebooks, a notebook not submitted scoring 0, less the late penalty)."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().select_related("assignment").get(pk=submission_id)
        files = list(submission.files.prefetch_related("cells"))
        if any(f.grading_state == FileGradingState.QUEUED for f in files):
            return
        assignment_files = submission.assignment.files.filter(is_notebook=True)
        submission.max_score = sum(f.points for f in assignment_files)
        if any(f.grading_state == FileGradingState.FAILED for f in files):
            submission.state = SubmissionState.FAILED
            submission.raw_score = submission.score = None
        else:
            submission.state = SubmissionState.GRADED
            submission.raw_score = sum(c.points or 0.0 for f in files for c in f.cells.all())
            submission.score = submission.raw_score * (1 - submission.late_penalty_percent / 100)
        submission.graded_at = timezone.now()
        submission.save(update_fields=["state", "raw_score", "score", "max_score", "graded_at"])


# --- reconciling --------------------------------------------------------------------------------------------
GRACE = dt.timedelta(seconds=30)  # work this recent is left to its own trigger, likely still on its way


def reconcile(limit: int = 100) -> int:
    """Whatever a crash left undone: submissions never queued, finished runs never recorded."""
    done = 0
    before = timezone.now() - GRACE
    waiting = (
        Submission.objects.filter(
            received_at__lte=before, files__run__isnull=True, files__grading_state=FileGradingState.QUEUED
        )
        .values_list("pk", flat=True)
        .distinct()[:limit]
    )
    for submission_id in list(waiting):
        done += _attempt(queue_grading, submission_id)
    finished = SubmissionFile.objects.filter(
        grading_state=FileGradingState.QUEUED, run__state__in=FINAL_STATES, run__finished_at__lte=before
    ).values_list("run_id", flat=True)[:limit]
    for run_id in list(finished):
        assert run_id is not None
        done += _attempt(record_grading, run_id)
    return done


def _attempt(step: Any, key: int) -> int:
    """One item of the reconciler: a failure is logged and retried next time, and never keeps
    the items after it from their turn."""
    try:
        step(key)
    except Exception:
        logger.exception("grading: %s(%s) failed; retried at the next sweep", step.__name__, key)
        return 0
    return 1
