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
    # Where the course's grading runs live (apps.courses.grading): a private project whose
    # members are the course's instructors (maintainers: their nodes registered for it grade) and
    # TAs (viewers: they watch). Students are never members: the graded notebooks hold hidden tests.
    grading_project = models.OneToOneField(
        "projects.Project", on_delete=models.SET_NULL, null=True, blank=True, related_name="grading_course"
    )
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


class LatePolicy(models.TextChoices):
    NONE = "none", "None: late work counts in full"
    ZERO = "zero", "Zero after the due date"
    PERCENT_PER_DAY = "percent_per_day", "A percentage per day late, up to a cap"


class ResultsVisibility(models.TextChoices):
    IMMEDIATELY = "immediately", "As soon as it is graded"
    AFTER_DUE = "after_due", "After the due date"
    ON_RELEASE = "on_release", "When the instructor releases grades"


class Assignment(models.Model):
    """An nbgrader-format assignment: instructor source notebooks (with solutions and hidden
    tests, never shown to students) and data files; students get the generated student version
    once it is released."""

    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="assignments")
    name = models.SlugField(max_length=100)
    due_at = models.DateTimeField(null=True, blank=True)
    late_policy = models.CharField(max_length=20, choices=LatePolicy.choices, default=LatePolicy.NONE)
    late_percent_per_day = models.FloatField(default=0.0)
    late_cap_percent = models.FloatField(default=100.0)
    grace_minutes = models.PositiveIntegerField(default=0)
    max_submissions = models.PositiveIntegerField(null=True, blank=True)
    results_visibility = models.CharField(
        max_length=12, choices=ResultsVisibility.choices, default=ResultsVisibility.IMMEDIATELY
    )
    released_at = models.DateTimeField(null=True, blank=True)
    grades_released_at = models.DateTimeField(null=True, blank=True)  # results_visibility on_release
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["course_id", "due_at", "name"]
        constraints = [models.UniqueConstraint(fields=["course", "name"], name="unique_assignment_name")]

    def __str__(self) -> str:
        return f"{self.course_id}/{self.name}"

    @property
    def is_released(self) -> bool:
        return self.released_at is not None


class AssignmentFile(models.Model):
    """One file of an assignment: a source notebook (with its generated student version and its
    graded cells) or a data file (the same for everyone)."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=300)
    is_notebook = models.BooleanField(default=False)
    # [{"grade_id", "kind" (test, manual, task, answer, locked), "points", "index"}]
    graded_cells = models.JSONField(default=list, blank=True)
    student_sha256 = models.CharField(max_length=64, blank=True)
    student_size = models.PositiveBigIntegerField(null=True, blank=True)
    student_storage_name = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["assignment_id", "path"]
        constraints = [models.UniqueConstraint(fields=["assignment", "path"], name="unique_assignment_file")]

    def __str__(self) -> str:
        return f"{self.assignment_id}:{self.path}"

    @property
    def points(self) -> float:
        return sum(float(c.get("points", 0)) for c in self.graded_cells)


class Extension(models.Model):
    """A student's own due date for an assignment (replaces the assignment's)."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="extensions")
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    due_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assignment", "student"], name="unique_extension")]

    def __str__(self) -> str:
        return f"extension for {self.student_id} on {self.assignment_id}"


class SubmissionState(models.TextChoices):
    RECEIVED = "received", "Received (waiting for grading)"
    GRADING = "grading", "Grading"
    GRADED = "graded", "Graded"
    FAILED = "failed", "Could not be graded"


class Submission(models.Model):
    """One immutable submission of a student's notebooks. The server's receipt time decides
    lateness; the late penalty is fixed at receipt, by the policy and any extension then."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="submissions")
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="submissions")
    number = models.PositiveIntegerField()  # 1, 2, … per student and assignment
    received_at = models.DateTimeField()
    late_seconds = models.PositiveBigIntegerField(default=0)
    late_penalty_percent = models.FloatField(default=0.0)
    state = models.CharField(max_length=10, choices=SubmissionState.choices, default=SubmissionState.RECEIVED)
    # Points over the assignment's notebooks (a notebook not submitted scores 0), before and after
    # the late penalty; None until every notebook is graded (a cell waiting for a grader counts 0
    # until it is graded).
    raw_score = models.FloatField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    max_score = models.FloatField(default=0.0)
    graded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["assignment_id", "student_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "student", "number"], name="unique_submission_number")
        ]

    def __str__(self) -> str:
        return f"submission {self.number} of {self.student_id} to {self.assignment_id}"


class FileGradingState(models.TextChoices):
    QUEUED = "queued", "Waiting for a node"
    GRADED = "graded", "Graded"
    FAILED = "failed", "Could not be graded"


class SubmissionFile(models.Model):
    """One submitted notebook, and its grading: a run of kind grading in the course's grading
    project, on the notebook rebuilt from the instructor's source with this file's answers."""

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=300)
    run = models.OneToOneField(
        "compute.Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="graded_file"
    )
    grading_state = models.CharField(max_length=10, choices=FileGradingState.choices, default=FileGradingState.QUEUED)
    grading_error = models.TextField(blank=True)  # why it could not be graded (instructors only)
    # What rebuilding noticed (instructors only): ["missing answer cell 'q1'", ...]
    flags = models.JSONField(default=list, blank=True)
    graded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["submission_id", "path"]
        constraints = [models.UniqueConstraint(fields=["submission", "path"], name="unique_submission_file")]

    def __str__(self) -> str:
        return f"{self.submission_id}:{self.path}"


class CellOutcome(models.TextChoices):
    PASSED = "passed", "Passed"
    PARTIAL = "partial", "Partial credit"
    FAILED = "failed", "Failed"
    TIMEOUT = "timeout", "Timed out"
    NO_REPLY = "no_reply", "Not run (no reply)"
    NO_RESPONSE = "no_response", "No response"
    NEEDS_GRADING = "needs_grading", "Waiting for a grader"
    GRADED = "graded", "Graded by hand"


class CellGrade(models.Model):
    """One graded cell of a submitted notebook: an autograder test, a manually graded answer or
    a task. The score is the grader's where there is one, else the autograder's."""

    file = models.ForeignKey(SubmissionFile, on_delete=models.CASCADE, related_name="cells")
    grade_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=10)  # test, manual, task (nbgrader_format.GradedCell)
    max_points = models.FloatField()
    auto_points = models.FloatField(null=True, blank=True)
    manual_points = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=CellOutcome.choices)
    hidden = models.BooleanField(default=False)  # the test has hidden parts
    message = models.TextField(blank=True)  # what the student may read (never a hidden test's text)
    detail = models.TextField(blank=True)  # what the grader saw (instructors and TAs only)
    flags = models.JSONField(default=list, blank=True)  # suspected tampering, for instructors
    comment = models.TextField(blank=True)  # the grader's words to the student
    graded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["file_id", "id"]
        constraints = [models.UniqueConstraint(fields=["file", "grade_id"], name="unique_cell_grade")]

    def __str__(self) -> str:
        return f"{self.file_id}:{self.grade_id}"

    @property
    def points(self) -> float | None:
        return self.manual_points if self.manual_points is not None else self.auto_points


class GradeChange(models.Model):
    """Every change of a cell's score after the autograder's: a grader's points, an override of an
    autograded test (with its reason), an answer to a regrade request. Never edited or deleted."""

    cell = models.ForeignKey(CellGrade, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    changed_at = models.DateTimeField(auto_now_add=True)
    old_points = models.FloatField(null=True, blank=True)
    new_points = models.FloatField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["cell_id", "changed_at", "id"]

    def __str__(self) -> str:
        return f"{self.cell_id}: {self.old_points} -> {self.new_points}"


class RegradeState(models.TextChoices):
    OPEN = "open", "Waiting for a grader"
    ANSWERED = "answered", "Answered"


class RegradeRequest(models.Model):
    """A student's request to look at one graded cell again, and the grader's answer."""

    cell = models.ForeignKey(CellGrade, on_delete=models.CASCADE, related_name="regrade_requests")
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=10, choices=RegradeState.choices, default=RegradeState.OPEN)
    answer = models.TextField(blank=True)
    answered_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"regrade of {self.cell_id} ({self.state})"
