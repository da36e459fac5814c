"""Courses: instructors, TAs (graders) and students. A course is private: everyone who is not a
member gets 404 for it everywhere (apps.courses.access)."""

from django.conf import settings
from django.db import models


class CourseRole(models.TextChoices):
    INSTRUCTOR = "instructor", "Instructor"
    TA = "ta", "Teaching assistant"
    STUDENT = "student", "Student"


STAFF_ROLES = (CourseRole.INSTRUCTOR, CourseRole.TA)


class Course(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class CourseMembership(models.Model):
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="course_memberships")
    role = models.CharField(max_length=12, choices=CourseRole.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["course_id", "role", "user_id"]
        constraints = [models.UniqueConstraint(fields=["course", "user"], name="unique_course_member")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.course_id}:{self.role}"


class CourseInvite(models.Model):
    """A link students join the course with, until an instructor revokes it. Only the token's
    sha256 is stored: the link is shown once, when it is made."""

    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="invites")
    token_hash = models.CharField(max_length=64, unique=True)
    display_prefix = models.CharField(max_length=16)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    joined = models.PositiveIntegerField(default=0)  # students who joined through it

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"invite {self.display_prefix}… to {self.course_id}"
