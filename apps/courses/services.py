"""Writes for courses: creating one, its members and roles, roster imports and invite links."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.core.secrets import hash_secret, new_secret

from . import grading
from .models import Course, CourseInvite, CourseMembership, CourseRole

INVITE_PREFIX = "rlc_"
MAX_ROSTER_BYTES = 1024 * 1024
MAX_ROSTER_ROWS = 5000
IDENTITY_COLUMNS = ("username", "email", "e-mail", "user")


RESERVED_SLUGS = {"join", "new"}  # page paths under /courses/


def course_create(*, creator: User, slug: str, title: str) -> Course:
    """A new course; its creator is its first instructor."""
    if slug in RESERVED_SLUGS:
        raise ValidationError({"slug": f"{slug!r} is reserved; choose another slug."})
    try:
        with transaction.atomic():
            course = Course.objects.create(slug=slug, title=title, created_by=creator)
            CourseMembership.objects.create(course=course, user=creator, role=CourseRole.INSTRUCTOR)
    except IntegrityError:
        raise ValidationError({"slug": f"A course {slug!r} exists already; choose another slug."}) from None
    grading.grading_project_for(course)  # now, so instructors can register nodes for it at once
    return course


def _instructors_left(course: Course, *, without: User) -> int:
    return course.memberships.filter(role=CourseRole.INSTRUCTOR).exclude(user=without).count()


@transaction.atomic
def member_set(*, course: Course, username: str, role: str) -> CourseMembership:
    """Add `username` with `role`, or change their role; the last instructor stays one."""
    user = User.objects.filter(username=username.replace("\x00", ""), is_active=True).first()
    if user is None:
        raise ValidationError({"username": f"No user {username[:150]!r}."})
    Course.objects.select_for_update().filter(pk=course.pk).first()  # role changes take turns
    membership = CourseMembership.objects.filter(course=course, user=user).first()
    if membership is None:
        membership = CourseMembership.objects.create(course=course, user=user, role=role)
    else:
        demoted = membership.role == CourseRole.INSTRUCTOR and role != CourseRole.INSTRUCTOR
        if demoted and not _instructors_left(course, without=user):
            raise ValidationError({"role": "A course keeps at least one instructor: add another one first."})
        membership.role = role
        membership.save(update_fields=["role"])
    grading.sync_staff(course)
    return membership


@transaction.atomic
def member_remove(*, course: Course, username: str) -> None:
    Course.objects.select_for_update().filter(pk=course.pk).first()
    membership = (
        CourseMembership.objects.filter(course=course, user__username=username.replace("\x00", ""))
        .select_related("user")
        .first()
    )
    if membership is None:
        raise ValidationError({"username": f"{username[:150]!r} is not a member of this course."})
    if membership.role == CourseRole.INSTRUCTOR and not _instructors_left(course, without=membership.user):
        raise ValidationError({"username": "A course keeps at least one instructor: add another one first."})
    membership.delete()
    grading.sync_staff(course)


# -- roster ------------------------------------------------------------------------------------------
@dataclass
class RosterReport:
    added: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"added": self.added, "already": self.already, "failed": self.failed}


def _roster_rows(content: bytes) -> list[tuple[int, str, str]]:
    """(row number, username or e-mail, name) for each row of a roster CSV, with or without a
    header (a header names a `username` or `email` column, and maybe `name`)."""
    if len(content) > MAX_ROSTER_BYTES:
        raise ValidationError({"file": f"A roster may be at most {MAX_ROSTER_BYTES // 1024} KiB."})
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError({"file": "A roster must be a UTF-8 CSV file."}) from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ValidationError({"file": f"Not a CSV file: {error}."}) from None
    if len(rows) > MAX_ROSTER_ROWS + 1:
        raise ValidationError({"file": f"A roster may have at most {MAX_ROSTER_ROWS} rows."})
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if any(column in header for column in IDENTITY_COLUMNS):
        identity = next(i for i, column in enumerate(header) if column in IDENTITY_COLUMNS)
        name = header.index("name") if "name" in header else -1
        body = enumerate(rows[1:], start=2)  # row numbers as a spreadsheet shows them
    else:
        identity, name = 0, 1
        body = enumerate(rows, start=1)
    found = []
    for number, row in body:
        if not any(cell.strip() for cell in row):
            continue
        value = row[identity].strip() if identity < len(row) else ""
        person = row[name].strip() if 0 <= name < len(row) else ""
        found.append((number, value, person))
    return found


def _user_for(value: str) -> tuple[User | None, str]:
    """The account a roster row names. By username only: this site does not verify e-mail
    addresses, so enrolling by one could enrol whoever signed up with it first, and the report
    would tell a course's creator which account holds an address."""
    if not value or "\x00" in value:
        return None, "no username"
    if "@" in value:
        return None, "e-mail addresses are not verified here: give the username, or send the course's invite link"
    user = User.objects.filter(username=value, is_active=True).first()
    return (user, "") if user else (None, "no such user")


@transaction.atomic
def roster_import(*, course: Course, content: bytes) -> RosterReport:
    """Enrol the roster's students. Each row names an existing account by username or e-mail;
    rows that cannot be enrolled are reported with their reason and enrol nobody else wrongly
    (a TA or instructor named in a roster keeps their role)."""
    report = RosterReport()
    for number, value, _name in _roster_rows(content):
        user, reason = _user_for(value)
        if user is None:
            report.failed.append({"row": number, "value": value[:200], "reason": reason})
            continue
        membership = CourseMembership.objects.filter(course=course, user=user).first()
        if membership is None:
            CourseMembership.objects.create(course=course, user=user, role=CourseRole.STUDENT)
            report.added.append(user.username)
        elif membership.role == CourseRole.STUDENT:
            report.already.append(user.username)
        else:
            report.failed.append(
                {"row": number, "value": value[:200], "reason": f"already a {membership.get_role_display().lower()}"}
            )
    return report


# -- invites -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewInvite:
    invite: CourseInvite
    token: str  # shown once


def invite_create(*, course: Course, creator: User) -> NewInvite:
    secret = new_secret(INVITE_PREFIX)
    invite = CourseInvite.objects.create(
        course=course, token_hash=secret.hash, display_prefix=secret.display_prefix, created_by=creator
    )
    return NewInvite(invite, secret.raw)


def invite_revoke(*, invite: CourseInvite) -> None:
    if invite.revoked_at is None:
        invite.revoked_at = timezone.now()
        invite.save(update_fields=["revoked_at"])


@transaction.atomic
def join(*, user: User, token: str) -> Course:
    """Join the course of a live invite as a student (a member already keeps their role).
    An unknown or revoked invite is "no such invite": it tells nothing of the course."""
    invite = (
        CourseInvite.objects.select_for_update()
        .select_related("course")
        .filter(token_hash=hash_secret(token[:200]), revoked_at__isnull=True)
        .first()
    )
    if invite is None:
        raise LookupError("No such invite, or it was revoked.")
    _, created = CourseMembership.objects.get_or_create(
        course=invite.course, user=user, defaults={"role": CourseRole.STUDENT}
    )
    if created:
        CourseInvite.objects.filter(pk=invite.pk).update(joined=invite.joined + 1)
    return invite.course
