from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from .models import Dataset, DatasetFile, DatasetVersion, Membership, Notebook, NotebookVersion, Project, Role


class ProjectSerializer(serializers.ModelSerializer):
    your_role = serializers.CharField(source="user_role", read_only=True, allow_null=True)

    class Meta:
        model = Project
        fields = ["slug", "name", "description", "license", "visibility", "your_role", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class ProjectUpdateSerializer(ProjectSerializer):
    class Meta(ProjectSerializer.Meta):
        read_only_fields = ["slug", "created_at", "updated_at"]


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]


class MembershipCreateSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class NotebookVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    environment = serializers.CharField(
        source="environment.lock.sha256",
        read_only=True,
        allow_null=True,
        help_text="The sha256 of the lock declared beside this version (GET the project's environment for its own).",
    )
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = NotebookVersion
        fields = [
            "id",
            "number",
            "sha256",
            "size",
            "parameters",
            "kernel_name",
            "language",
            "message",
            "environment",
            "created_by",
            "created_at",
            "download_url",
        ]

    def get_download_url(self, version: NotebookVersion) -> str:
        return reverse(
            "api-notebook-version-download",
            kwargs={"slug": self.context["project"].slug, "notebook_id": version.notebook_id, "number": version.number},
        )


class NotebookSerializer(serializers.ModelSerializer):
    latest_version = NotebookVersionSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Notebook
        fields = ["id", "path", "created_at", "updated_at", "latest_version"]


class NotebookUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="An .ipynb file (nbformat 4).")
    path = serializers.CharField(
        max_length=500, required=False, help_text="Where the notebook lives in the project; defaults to the file name."
    )
    message = serializers.CharField(max_length=500, required=False, default="")
    environment = serializers.FileField(
        required=False,
        help_text="This version's declared environment (requirements.txt, pyproject.toml or uv.lock); it wins "
        "over the project's.",
    )
    layered = serializers.BooleanField(
        required=False, default=False, help_text="Build the environment over the node's base packages."
    )


class DatasetFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetFile
        fields = ["path", "sha256", "size"]


class DatasetVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)

    class Meta:
        model = DatasetVersion
        fields = ["number", "message", "file_count", "total_size", "created_by", "created_at"]


class DatasetVersionDetailSerializer(DatasetVersionSerializer):
    files = DatasetFileSerializer(many=True, read_only=True)

    class Meta(DatasetVersionSerializer.Meta):
        fields = [*DatasetVersionSerializer.Meta.fields, "files"]


class DatasetSerializer(serializers.ModelSerializer):
    latest_version = DatasetVersionSerializer(read_only=True, allow_null=True, help_text="Null until files are added.")

    class Meta:
        model = Dataset
        fields = ["name", "description", "created_at", "updated_at", "latest_version"]
        read_only_fields = ["created_at", "updated_at"]


class DatasetUploadSerializer(serializers.Serializer):
    files = serializers.ListField(child=serializers.FileField(), allow_empty=False)
    paths = serializers.ListField(
        child=serializers.CharField(max_length=500),
        required=False,
        help_text="Optional paths inside the dataset, one per file in the same order; default: the file names.",
    )
    message = serializers.CharField(max_length=500, required=False, default="")

    def validate_files(self, files: list[Any]) -> list[Any]:
        # Django's DATA_UPLOAD_MAX_NUMBER_FILES refuses more while parsing; this holds the
        # documented limit even where that setting is raised for some other form.
        limit = settings.REPROLAB_DATASET_MAX_FILES
        if len(files) > limit:
            raise serializers.ValidationError(f"At most {limit} files per upload (REPROLAB_DATASET_MAX_FILES).")
        return files

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        paths = attrs.get("paths")
        if paths is not None and len(paths) != len(attrs["files"]):
            raise serializers.ValidationError({"paths": "Give one path per uploaded file, or none."})
        return attrs
