"""Grading pages: a submission (score, per-cell results, the feedback notebook rendered sanitized in
a sandboxed iframe; for teaching staff the grader's notes and the forms to grade by hand; for its
student a regrade request), submitting from the assignment page, an assignment's grading queue,
and the course's gradebook. They call the same services as the API, with the same rules: a course
is 404 to non-members, a student sees only their own work and only once results are visible."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from apps.accounts.request_user import authenticated_user
from apps.projects.rendering import render_stored
from apps.projects.views import render_requester, sandboxed_render_response

from . import assignments, gradebook, grading, manual, submissions
from .access import CAN_MANAGE, assignment_for, course_for, require_course_role, role_in, submissions_for
from .models import STAFF_ROLES, Assignment, Course, CourseRole, FileGradingState, Submission


def _assignment(request: HttpRequest, slug: str, name: str) -> tuple[Course, Assignment, bool]:
    course, assignment = assignment_for(request.user, slug, name)
    return course, assignment, role_in(course) in STAFF_ROLES


def _submission(request: HttpRequest, slug: str, name: str, submission_id: int) -> tuple[Course, Submission, bool]:
    course, assignment, staff = _assignment(request, slug, name)
    found = (
        submissions_for(authenticated_user(request), course, assignment)
        .select_related("student", "assignment")
        .prefetch_related("files__cells__changes__changed_by", "files__cells__regrade_requests")
    )
    return course, get_object_or_404(found, pk=submission_id), staff


def _errors(error: ValidationError) -> str:
    return " ".join(str(m) for m in (error.message_dict.values() if hasattr(error, "error_dict") else [error.messages]))


@login_required
def submission_detail(request: HttpRequest, slug: str, name: str, submission_id: int) -> HttpResponse:
    course, submission, staff = _submission(request, slug, name, submission_id)
    visible = submissions.results_visible(submission, staff=staff)
    context = {
        "course": course,
        "assignment": submission.assignment,
        "submission": submission,
        "staff": staff,
        "instructor": role_in(course) == CourseRole.INSTRUCTOR,
        "visible": visible,
        "files": [
            {"file": f, "feedback": f.grading_state == FileGradingState.GRADED and submissions.feedback_artifact(f)}
            for f in submission.files.all()
        ],
    }
    return render(request, "courses/submission_detail.html", context)


@xframe_options_sameorigin
@login_required
def submission_feedback(request: HttpRequest, slug: str, name: str, submission_id: int, index: int) -> HttpResponse:
    """The feedback notebook of the submission's `index`-th file, as the sandboxed iframe's document."""
    _, submission, staff = _submission(request, slug, name, submission_id)
    files = list(submission.files.all())
    if not submissions.results_visible(submission, staff=staff) or not 0 <= index < len(files):
        raise Http404("No feedback.")
    artifact = submissions.feedback_artifact(files[index])
    if artifact is None:
        raise Http404("No feedback yet.")
    result = render_stored(
        sha256=artifact.sha256, storage_name=artifact.storage_name, requester=render_requester(request)
    )
    return sandboxed_render_response(request, result)


@login_required
@require_POST
def submit_page(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    course, assignment, _ = _assignment(request, slug, name)
    require_course_role(course, (CourseRole.STUDENT,), "submit to this assignment")
    uploads = request.FILES.getlist("files")
    try:
        made = submissions.submit(
            assignment=assignment,
            student=authenticated_user(request),
            files=[assignments.Incoming(path=u.name or "", content=u) for u in uploads],
        )
    except ValidationError as error:
        messages.error(request, _errors(error))
        return redirect("courses:assignment", slug=slug, name=name)
    return redirect("courses:submission", slug=slug, name=name, submission_id=made.pk)


@login_required
@require_POST
def release_page(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """Release the assignment to the students (instructors)."""
    course, assignment, _ = _assignment(request, slug, name)
    require_course_role(course, CAN_MANAGE, "release assignments")
    assignments.assignment_release(assignment=assignment)
    messages.info(request, "Released: students can download it now.")
    return redirect("courses:assignment", slug=slug, name=name)


@login_required
@require_POST
def grade_cell_page(request: HttpRequest, slug: str, name: str, submission_id: int) -> HttpResponse:
    course, submission, _ = _submission(request, slug, name, submission_id)
    require_course_role(course, STAFF_ROLES, "grade submissions")
    try:
        cell = manual.cell_of(submission, request.POST.get("grade_id", ""), request.POST.get("notebook", ""))
        points_text = request.POST.get("points", "").strip()
        points = float(points_text) if points_text else None
        if cell.kind == "test" and points is not None:
            require_course_role(course, CAN_MANAGE, "override an autograded test")
        manual.grade_cell(
            cell=cell,
            grader=authenticated_user(request),
            points=points,
            comment=request.POST.get("comment"),
            reason=request.POST.get("reason", ""),
        )
    except ValueError:
        messages.error(request, "Points are a number.")
    except ValidationError as error:
        messages.error(request, _errors(error))
    return redirect("courses:submission", slug=slug, name=name, submission_id=submission_id)


@login_required
@require_POST
def regrade_page(request: HttpRequest, slug: str, name: str, submission_id: int) -> HttpResponse:
    """A student asks for a cell to be looked at again; staff grade the whole submission again."""
    _, submission, staff = _submission(request, slug, name, submission_id)
    try:
        if staff:
            grading.regrade(submission)
            messages.info(request, "Grading again.")
        else:
            if not submissions.results_visible(submission, staff=False):
                raise Http404("No results yet.")
            cell = manual.cell_of(submission, request.POST.get("grade_id", ""), request.POST.get("notebook", ""))
            manual.request_regrade(
                cell=cell, student=authenticated_user(request), message=request.POST.get("message", "")
            )
            messages.info(request, "Your request went to the graders.")
    except ValidationError as error:
        messages.error(request, _errors(error))
    return redirect("courses:submission", slug=slug, name=name, submission_id=submission_id)


@login_required
def grading_queue_page(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    course, assignment, staff = _assignment(request, slug, name)
    if not staff:
        raise PermissionDenied("Only teaching staff see the grading queue.")
    names = request.GET.get("names") == "1"
    items = manual.grading_queue(gradebook.latest_submissions(assignment.submissions.all()))
    context = {"course": course, "assignment": assignment, "items": items, "names": names}
    return render(request, "courses/grading_queue.html", context)


@login_required
def gradebook_page(request: HttpRequest, slug: str) -> HttpResponse:
    course = course_for(request.user, slug)
    require_course_role(course, STAFF_ROLES, "see the gradebook")
    book = gradebook.gradebook(course)
    rows = [(s, [book.entry(s, a) for a in book.assignments]) for s in book.students]
    return render(request, "courses/gradebook.html", {"course": course, "book": book, "rows": rows})
