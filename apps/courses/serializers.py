from rest_framework import serializers

from .models import Course, CourseInvite, CourseMembership, CourseRole


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
