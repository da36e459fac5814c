import datetime

from rest_framework import serializers

from .models import (
    Assignment,
    AssignmentFile,
    Course,
    CourseInvite,
    CourseMembership,
    CourseRole,
    LatePolicy,
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
            "files",
            "created_at",
        ]


class SubmissionFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubmissionFile
        fields = ["path", "sha256", "size"]


class SubmissionSerializer(serializers.ModelSerializer):
    student = serializers.CharField(source="student.username", read_only=True)
    assignment = serializers.CharField(source="assignment.name", read_only=True)
    files = SubmissionFileSerializer(many=True, read_only=True)

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
            "files",
        ]


class SubmissionUploadSerializer(serializers.Serializer):
    files = serializers.ListField(child=serializers.FileField(), min_length=1, max_length=20)


class ExtensionSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    due_at = serializers.DateTimeField(validators=[plausible_date])
