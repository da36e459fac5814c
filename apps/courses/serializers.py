import datetime
import math
from typing import Any
from urllib.parse import quote

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import (
    Assignment,
    AssignmentFile,
    CellGrade,
    CellOutcome,
    Course,
    CourseInvite,
    CourseMembership,
    CourseRole,
    FileGradingState,
    GradeChange,
    LatePolicy,
    RegradeRequest,
    ResultsVisibility,
    Submission,
    SubmissionFile,
)


def plausible_date(value: datetime.datetime | None) -> None:
    if value is not None and not 2000 <= value.year <= 2200:
        raise serializers.ValidationError("A due date between the years 2000 and 2200.")


class CourseSerializer(serializers.ModelSerializer):
    your_role = serializers.CharField(source="user_role", read_only=True, allow_null=True)

    class Meta:
        model = Course
        fields = ["slug", "title", "your_role", "created_at"]
        read_only_fields = ["created_at"]


class CourseMemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = CourseMembership
        fields = ["username", "role", "created_at"]


class MemberWriteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=CourseRole.choices)


class RosterSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV: a username or e-mail column (header `username` or `email`), and a name."
    )


class InviteSerializer(serializers.ModelSerializer):
    class Meta:
        model = CourseInvite
        fields = ["id", "display_prefix", "created_at", "revoked_at", "joined"]


class JoinSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)


class AssignmentCreateSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100)
    files = serializers.ListField(
        child=serializers.FileField(),
        min_length=1,
        max_length=100,
        help_text="Source notebooks (nbgrader cell metadata, schema 3) and data files.",
    )
    due_at = serializers.DateTimeField(required=False, allow_null=True, default=None, validators=[plausible_date])
    late_policy = serializers.ChoiceField(choices=LatePolicy.choices, default=LatePolicy.NONE)
    late_percent_per_day = serializers.FloatField(min_value=0, max_value=100, default=0.0)
    late_cap_percent = serializers.FloatField(min_value=0, max_value=100, default=100.0)
    grace_minutes = serializers.IntegerField(min_value=0, max_value=7 * 24 * 60, default=0)
    max_submissions = serializers.IntegerField(min_value=1, max_value=1000, required=False, allow_null=True)
    results_visibility = serializers.ChoiceField(
        choices=ResultsVisibility.choices, default=ResultsVisibility.IMMEDIATELY
    )


class AssignmentFileSerializer(serializers.ModelSerializer):
    points = serializers.FloatField(read_only=True)

    class Meta:
        model = AssignmentFile
        fields = ["path", "is_notebook", "points", "student_sha256", "graded_cells"]


class AssignmentSerializer(serializers.ModelSerializer):
    files = AssignmentFileSerializer(many=True, read_only=True)
    released = serializers.BooleanField(source="is_released", read_only=True)

    class Meta:
        model = Assignment
        fields = [
            "name",
            "due_at",
            "late_policy",
            "late_percent_per_day",
            "late_cap_percent",
            "grace_minutes",
            "max_submissions",
            "results_visibility",
            "released",
            "released_at",
            "grades_released_at",
            "files",
            "created_at",
        ]


class CellGradeSerializer(serializers.ModelSerializer):
    """A graded cell as its student sees it: never a hidden test's text, nor the grader's notes."""

    points = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = CellGrade
        fields = ["grade_id", "kind", "max_points", "points", "outcome", "message", "hidden", "comment"]


class GradeChangeSerializer(serializers.ModelSerializer):
    changed_by = serializers.CharField(source="changed_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = GradeChange
        fields = ["changed_by", "changed_at", "old_points", "new_points", "reason"]


class StaffCellGradeSerializer(CellGradeSerializer):
    changes = GradeChangeSerializer(many=True, read_only=True)

    class Meta(CellGradeSerializer.Meta):
        fields = [*CellGradeSerializer.Meta.fields, "auto_points", "manual_points", "detail", "flags", "changes"]


class PointsField(serializers.FloatField):
    """Points: a finite number, never true or false (which Python would read as 1 and 0)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            raise serializers.ValidationError("Points are a number, not true or false.")
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            raise serializers.ValidationError("Points are a finite number.")
        return value


class CellGradeWriteSerializer(serializers.Serializer):
    notebook = serializers.CharField(
        max_length=500, required=False, default="", help_text="When two notebooks have the cell."
    )
    points = PointsField(required=False, allow_null=True, default=None)
    comment = serializers.CharField(max_length=10_000, required=False, allow_blank=True, allow_null=True, default=None)
    reason = serializers.CharField(
        max_length=10_000, required=False, allow_blank=True, default="", help_text="Required to override a test."
    )


class RegradeRequestSerializer(serializers.ModelSerializer):
    submission = serializers.IntegerField(source="cell.file.submission_id", read_only=True)
    notebook = serializers.CharField(source="cell.file.path", read_only=True)
    grade_id = serializers.CharField(source="cell.grade_id", read_only=True)
    student = serializers.CharField(source="student.username", read_only=True)

    class Meta:
        model = RegradeRequest
        fields = [
            "id",
            "submission",
            "notebook",
            "grade_id",
            "student",
            "message",
            "created_at",
            "state",
            "answer",
            "answered_at",
        ]


class RegradeAskSerializer(serializers.Serializer):
    notebook = serializers.CharField(max_length=500, required=False, default="")
    message = serializers.CharField(max_length=10_000)


class RegradeAnswerSerializer(serializers.Serializer):
    answer = serializers.CharField(max_length=10_000)
    points = PointsField(required=False, allow_null=True, default=None)


class SubmissionFileSerializer(serializers.ModelSerializer):
    """A submitted notebook; its grading once results are visible to the reader (see
    SubmissionSerializer), else `cells` is empty."""

    cells = serializers.SerializerMethodField()
    feedback = serializers.SerializerMethodField(help_text="The feedback notebook (.ipynb), once graded.")

    class Meta:
        model = SubmissionFile
        fields = ["path", "sha256", "size", "grading_state", "cells", "feedback"]

    def _visible(self, file: SubmissionFile) -> bool:
        return bool(self.context.get("results_visible", {}).get(file.submission_id))

    @extend_schema_field(CellGradeSerializer(many=True))
    def get_cells(self, file: SubmissionFile) -> list[dict[str, Any]]:
        if not self._visible(file) or file.grading_state != FileGradingState.GRADED:
            return []
        serializer = StaffCellGradeSerializer if self.context.get("staff") else CellGradeSerializer
        return list(serializer(file.cells.all(), many=True).data)

    def get_feedback(self, file: SubmissionFile) -> str | None:
        request = self.context.get("request")
        if request is None or not self._visible(file) or file.grading_state != FileGradingState.GRADED:
            return None
        submission = file.submission
        url = reverse(
            "api-course-submission-feedback",
            kwargs={
                "slug": submission.assignment.course.slug,
                "name": submission.assignment.name,
                "submission_id": submission.pk,
            },
        )
        return str(request.build_absolute_uri(f"{url}?notebook={quote(file.path)}"))


class StaffSubmissionFileSerializer(SubmissionFileSerializer):
    run = serializers.IntegerField(source="run_id", read_only=True, allow_null=True)

    class Meta(SubmissionFileSerializer.Meta):
        fields = [*SubmissionFileSerializer.Meta.fields, "run", "flags", "grading_error"]


class SubmissionSerializer(serializers.ModelSerializer):
    """A submission; its score and per-cell results once they are visible to the reader
    (teaching staff: always; its student: by the assignment's results_visibility)."""

    student = serializers.CharField(source="student.username", read_only=True)
    assignment = serializers.CharField(source="assignment.name", read_only=True)
    files = SubmissionFileSerializer(many=True, read_only=True)
    results_visible = serializers.SerializerMethodField()
    score = serializers.SerializerMethodField()
    raw_score = serializers.SerializerMethodField()
    needs_manual_grading = serializers.SerializerMethodField()

    class Meta:
        model = Submission
        fields = [
            "id",
            "assignment",
            "student",
            "number",
            "received_at",
            "late_seconds",
            "late_penalty_percent",
            "state",
            "results_visible",
            "score",
            "raw_score",
            "max_score",
            "needs_manual_grading",
            "graded_at",
            "files",
        ]

    def get_results_visible(self, submission: Submission) -> bool:
        return bool(self.context.get("results_visible", {}).get(submission.pk))

    def get_score(self, submission: Submission) -> float | None:
        return submission.score if self.get_results_visible(submission) else None

    def get_raw_score(self, submission: Submission) -> float | None:
        return submission.raw_score if self.get_results_visible(submission) else None

    def get_needs_manual_grading(self, submission: Submission) -> bool:
        return any(
            cell.outcome == CellOutcome.NEEDS_GRADING for file in submission.files.all() for cell in file.cells.all()
        )


class StaffSubmissionSerializer(SubmissionSerializer):
    files = StaffSubmissionFileSerializer(many=True, read_only=True)


class SubmissionUploadSerializer(serializers.Serializer):
    files = serializers.ListField(child=serializers.FileField(), min_length=1, max_length=20)


class ExtensionSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    due_at = serializers.DateTimeField(validators=[plausible_date])
