"""Who sees a course: its members only. Every page and endpoint loads a course through
`course_for`, so to anyone else a course does not exist (404, never 403); a member without the
role an action needs gets 403 (they can see the course)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from .models import STAFF_ROLES, Assignment, Course, CourseMembership, CourseRole, Submission

CAN_MANAGE = (CourseRole.INSTRUCTOR,)


def courses_of(user: Any) -> QuerySet[Course]:
    """The courses `user` is a member of, each annotated with `user_role`."""
    if user is None or not user.is_authenticated:
        return Course.objects.none()
    role = CourseMembership.objects.filter(course=OuterRef("pk"), user=user).values("role")[:1]
    return Course.objects.annotate(user_role=Subquery(role)).filter(user_role__isnull=False)


def course_for(user: Any, slug: str) -> Course:
    course = courses_of(user).filter(slug=slug).first()
    if course is None:
        raise Http404("No such course.")
    return course


def role_in(course: Course) -> str | None:
    return getattr(course, "user_role", None)


def require_course_role(course: Course, roles: tuple[str, ...], action: str) -> None:
    if role_in(course) not in roles:
        names = " or ".join(CourseRole(r).label.lower() for r in roles)
        raise PermissionDenied(f"Only an {names} of this course may {action}.")


def assignment_for(user: Any, slug: str, name: str) -> tuple[Course, Assignment]:
    """The assignment as `user` may see it (its files prefetched): teaching staff always, a
    student once it is released (404 before, as for a course they are not in)."""
    course = course_for(user, slug)
    assignment = course.assignments.filter(name=name).prefetch_related("files").first()
    if assignment is None or (role_in(course) not in STAFF_ROLES and not assignment.is_released):
        raise Http404("No such assignment.")
    return course, assignment


def submissions_for(user: Any, course: Course, assignment: Assignment) -> QuerySet[Submission]:
    """The assignment's submissions `user` may see: teaching staff, all; a student, their own
    (another's is not there: 404)."""
    found = assignment.submissions.all()
    return found if role_in(course) in STAFF_ROLES else found.filter(student=user)
