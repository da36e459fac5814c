"""Course pages: the list of one's courses, a course (its assignments; for its teaching staff,
the members too), an assignment (release, download, one's own submissions), and joining through
an invite link. Like the API, a course is 404 to anyone who is not a member."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.accounts.request_user import authenticated_user

from . import services
from .access import assignment_for, course_for, courses_of, role_in, submissions_for
from .models import STAFF_ROLES, CourseRole


@login_required
def course_list(request: HttpRequest) -> HttpResponse:
    return render(request, "courses/course_list.html", {"courses": courses_of(request.user)})


@login_required
def course_detail(request: HttpRequest, slug: str) -> HttpResponse:
    course = course_for(request.user, slug)
    staff = role_in(course) in STAFF_ROLES
    assignments = course.assignments.prefetch_related("files")
    if not staff:
        assignments = assignments.filter(released_at__isnull=False)
    context = {
        "course": course,
        "role": role_in(course),
        "staff": staff,
        "assignments": assignments,
        "members": course.memberships.select_related("user").order_by("role", "user__username") if staff else [],
    }
    return render(request, "courses/course_detail.html", context)


@login_required
def assignment_detail(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    course, assignment = assignment_for(request.user, slug, name)
    staff = role_in(course) in STAFF_ROLES
    submissions = submissions_for(authenticated_user(request), course, assignment)
    submissions = submissions.select_related("student").prefetch_related("files")
    context = {
        "course": course,
        "assignment": assignment,
        "staff": staff,
        "can_release": role_in(course) == CourseRole.INSTRUCTOR and not assignment.is_released,
        "submissions": submissions,
    }
    return render(request, "courses/assignment_detail.html", context)


@login_required
@require_POST
def join(request: HttpRequest) -> HttpResponse:
    """The invite link's page posts its token here."""
    try:
        course = services.join(user=authenticated_user(request), token=request.POST.get("token", ""))
    except LookupError as error:
        raise Http404(str(error)) from None
    return redirect("courses:detail", slug=course.slug)


@login_required
def join_page(request: HttpRequest, token: str) -> HttpResponse:
    """What an invite link opens: a button to join (a GET changes nothing)."""
    return render(request, "courses/join.html", {"token": token})
