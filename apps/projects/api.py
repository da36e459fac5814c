"""REST API for projects, members, notebooks and datasets (/api/v1/projects/…).

Every view resolves its project through `get_project_for`, so an outsider gets 404 for a private
project and everything under it; writes then check the requester's role (403 for members
without enough rights)."""

from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from apps.accounts.models import User
from apps.accounts.request_user import authenticated_user
from apps.core.api import validated
from apps.core.parsers import BoundedJSONParser
from apps.core.schema import errors
from apps.core.uploads import blob_response, reject_oversized_body, reject_oversized_file
from apps.environments.declarations import MAX_DECLARATION_BYTES
from apps.environments.services import declare

from . import services
from .models import Dataset, DatasetFile, DatasetVersion, Membership, Notebook, NotebookVersion, Project
from .permissions import (
    CAN_DELETE_PROJECT,
    CAN_EDIT_PROJECT,
    CAN_MANAGE_MEMBERS,
    CAN_UPLOAD,
    get_project_for,
    require_role,
    role_of,
)
from .serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    DatasetVersionDetailSerializer,
    DatasetVersionSerializer,
    MembershipCreateSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    NotebookSerializer,
    NotebookUploadSerializer,
    NotebookVersionSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
)


class ProjectFilter(django_filters.FilterSet):
    member = django_filters.BooleanFilter(method="filter_member", label="Only projects you are a member of")

    class Meta:
        model = Project
        fields = ["visibility", "license"]

    def filter_member(self, queryset: QuerySet[Project], name: str, value: bool | None) -> QuerySet[Project]:
        if value is None:
            return queryset
        return queryset.filter(user_role__isnull=not value)  # type: ignore[misc]  # annotated by visible_to


# 409: a project with runs or publications keeps them as the record of what was done.
@extend_schema_view(destroy=extend_schema(responses={204: None, **errors(409)}))
class ProjectViewSet(viewsets.ModelViewSet):
    """Projects you can see: every public one and the private ones you belong to."""

    lookup_field = "slug"
    filterset_class = ProjectFilter
    search_fields = ["name", "slug", "description"]
    ordering_fields = ["name", "slug", "created_at", "updated_at"]

    def get_queryset(self) -> QuerySet[Project]:
        return Project.objects.visible_to(self.request.user)

    def get_object(self) -> Project:
        project = super().get_object()
        # Checked before the body is validated, so a viewer learns "not allowed", not "bad field".
        if self.action in ("update", "partial_update"):
            require_role(project, CAN_EDIT_PROJECT, "change its settings")
        elif self.action == "destroy":
            require_role(project, CAN_DELETE_PROJECT, "delete it")
        return project

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action in ("update", "partial_update"):
            return ProjectUpdateSerializer
        return ProjectSerializer

    def perform_create(self, serializer: BaseSerializer) -> None:
        project = services.project_create(creator=authenticated_user(self.request), **serializer.validated_data)
        serializer.instance = Project.objects.visible_to(self.request.user).get(pk=project.pk)

    def perform_update(self, serializer: BaseSerializer) -> None:
        assert serializer.instance is not None
        services.project_update(project=serializer.instance, **serializer.validated_data)


class ProjectScopedMixin(GenericAPIView):
    """Resolves `self.project` from the URL's slug, with the requester's role annotated."""

    @property
    def project(self) -> Project:
        if not hasattr(self, "_project"):
            self._project = get_project_for(self.request.user, self.kwargs["slug"])
        return self._project

    def get_serializer_context(self) -> dict[str, Any]:
        context: dict[str, Any] = super().get_serializer_context()
        context["project"] = self.project
        return context


class MembershipViewSet(ProjectScopedMixin, viewsets.ModelViewSet):
    """Members of a project and their roles: owner, maintainer, member, viewer."""

    lookup_field = "user__username"
    lookup_url_kwarg = "username"
    queryset = Membership.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = MembershipSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["role"]
    search_fields = ["user__username"]
    ordering_fields = ["created_at", "user__username"]

    def get_queryset(self) -> QuerySet[Membership]:
        return Membership.objects.filter(project=self.project).select_related("user")

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_role(self.project, CAN_MANAGE_MEMBERS, "manage members")
        data = validated(MembershipCreateSerializer, request.data)
        user = User.objects.filter(username=data["username"]).first()
        if user is None:
            raise ValidationError({"username": f"No user named '{data['username']}'."})
        if Membership.objects.filter(project=self.project, user=user).exists():
            raise ValidationError({"username": f"'{user.username}' is already a member; PATCH their role instead."})
        membership = services.membership_set(
            project=self.project, user=user, role=data["role"], actor_role=role_of(self.project)
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipSerializer)
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_role(self.project, CAN_MANAGE_MEMBERS, "manage members")
        membership = self.get_object()
        data = validated(MembershipUpdateSerializer, request.data)
        membership = services.membership_set(
            project=self.project, user=membership.user, role=data["role"], actor_role=role_of(self.project)
        )
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        membership = self.get_object()
        leaving = membership.user_id == request.user.pk  # anyone may leave (if an owner remains)
        if not leaving:
            require_role(self.project, CAN_MANAGE_MEMBERS, "manage members")
        services.membership_remove(membership=membership, actor_role=role_of(self.project))
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotebookViewSet(ProjectScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Notebooks of a project. POST a multipart `file` (and optional `path`) to upload a new
    version; identical content at the same path creates no new version."""

    queryset = Notebook.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = NotebookSerializer
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]
    lookup_url_kwarg = "notebook_id"
    search_fields = ["path"]
    ordering_fields = ["path", "updated_at", "created_at"]
    filterset_fields: list[str] = []

    def get_queryset(self) -> QuerySet[Notebook]:
        return Notebook.objects.filter(project=self.project).select_related(
            "latest_version__created_by", "latest_version__environment"
        )

    @extend_schema(
        request={"multipart/form-data": NotebookUploadSerializer},
        responses={201: NotebookSerializer, 200: NotebookSerializer, **errors(413)},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_role(self.project, CAN_UPLOAD, "upload notebooks")
        limit = settings.REPROLAB_NOTEBOOK_MAX_BYTES
        reject_oversized_body(request, limit)
        data = validated(NotebookUploadSerializer, request.data)
        upload = data["file"]
        reject_oversized_file(upload.name, upload.size, limit)
        declared = data.get("environment")
        environment = None
        if declared is not None:
            reject_oversized_file(declared.name, declared.size, MAX_DECLARATION_BYTES)
            environment = declare(declared.name, declared.read(), layered=data["layered"])
        result = services.notebook_upload(
            project=self.project,
            path=data.get("path") or upload.name,
            content=upload,
            uploader=authenticated_user(request),
            message=data["message"],
            environment=environment,
        )
        notebook = self.get_queryset().get(pk=result.notebook.pk)
        # 201 for a new version, 200 when the content was already the latest version.
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(self.get_serializer(notebook).data, status=code)

    @extend_schema(responses=NotebookVersionSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])  # the notebook filters do not apply
    def versions(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        notebook = self.get_object()
        versions = notebook.versions.select_related("created_by", "environment").order_by("-number")
        page = self.paginate_queryset(versions)
        serializer = NotebookVersionSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)


class NotebookVersionViewSet(ProjectScopedMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = NotebookVersion.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = NotebookVersionSerializer
    lookup_field = "number"

    def get_queryset(self) -> QuerySet[NotebookVersion]:
        return NotebookVersion.objects.filter(
            notebook__project=self.project, notebook_id=self.kwargs["notebook_id"]
        ).select_related("created_by", "notebook", "environment")

    @extend_schema(responses=dict)
    @action(detail=True, methods=["get"])
    def datacite(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """DataCite metadata (JSON, resourceTypeGeneral ComputationalNotebook) for this version."""
        from apps.reproducibility.datacite import notebook_version_datacite

        version = self.get_object()
        url = request.build_absolute_uri(
            reverse("projects:notebook", args=[self.project.slug, version.notebook.path]) + f"?v={version.number}"
        )
        return Response(notebook_version_datacite(self.project, version.notebook, version, url=url))

    @extend_schema(responses={(200, "application/x-ipynb+json"): OpenApiTypes.OBJECT})  # a notebook is JSON
    @action(detail=True, methods=["get"])
    def download(self, request: Request, *args: Any, **kwargs: Any) -> FileResponse:
        version = self.get_object()
        return blob_response(
            storage_name=version.storage_name,
            filename=version.notebook.name,
            sha256=version.sha256,
            content_type="application/x-ipynb+json",
        )


class DatasetViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Datasets of a project. Create one with a name, then POST files to its versions."""

    queryset = Dataset.objects.none()  # the model, for the schema; get_queryset scopes it
    serializer_class = DatasetSerializer
    lookup_field = "name"
    search_fields = ["name", "description"]
    ordering_fields = ["name", "updated_at", "created_at"]
    filterset_fields: list[str] = []

    def get_queryset(self) -> QuerySet[Dataset]:
        return Dataset.objects.filter(project=self.project).select_related("latest_version__created_by")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # The role first: a viewer learns "not allowed" before anything about the body.
        require_role(self.project, CAN_UPLOAD, "create datasets")
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer) -> None:
        serializer.instance = services.dataset_create(
            project=self.project,
            creator=authenticated_user(self.request),
            **serializer.validated_data,
        )


class DatasetVersionViewSet(
    ProjectScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Versions of a dataset. POST multipart `files` (repeatable) to add or replace files."""

    queryset = DatasetVersion.objects.none()  # the model, for the schema; get_queryset scopes it
    lookup_field = "number"
    parser_classes = [MultiPartParser, FormParser]
    filterset_fields: list[str] = []
    ordering_fields = ["number", "created_at"]

    @property
    def dataset(self) -> Dataset:
        if not hasattr(self, "_dataset"):
            self._dataset = get_object_or_404(Dataset, project=self.project, name=self.kwargs["name"])
        return self._dataset

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        versions = DatasetVersion.objects.filter(dataset=self.dataset).select_related("created_by")
        if self.action == "retrieve":
            versions = versions.prefetch_related("files")
        return versions

    def get_serializer_class(self) -> type[BaseSerializer]:
        return DatasetVersionDetailSerializer if self.action == "retrieve" else DatasetVersionSerializer

    @extend_schema(
        request={"multipart/form-data": DatasetUploadSerializer},
        responses={201: DatasetVersionDetailSerializer, 200: DatasetVersionDetailSerializer, **errors(413)},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_role(self.project, CAN_UPLOAD, "upload dataset files")
        limit = settings.REPROLAB_DATASET_UPLOAD_MAX_BYTES
        reject_oversized_body(request, limit)
        data = validated(DatasetUploadSerializer, request.data)
        uploads = data["files"]
        reject_oversized_file("the upload", sum(f.size for f in uploads), limit)
        paths = data.get("paths") or [f.name for f in uploads]
        version, created = services.dataset_add_files(
            dataset=self.dataset,
            files=[services.IncomingFile(path=p, content=f) for p, f in zip(paths, uploads, strict=True)],
            uploader=authenticated_user(request),
            message=data["message"],
        )
        version = self.get_queryset().prefetch_related("files").get(pk=version.pk)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(DatasetVersionDetailSerializer(version).data, status=code)

    @extend_schema(
        parameters=[OpenApiParameter("path", str, OpenApiParameter.QUERY, required=True)],
        # The media type is the one the file's name suggests (text/csv, ...), else octet-stream.
        responses={(200, "*/*"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, *args: Any, **kwargs: Any) -> FileResponse:
        """Download one file of this version: `?path=data/train.csv`."""
        version = self.get_object()
        path = request.query_params.get("path", "")
        if not path:
            raise ValidationError({"path": "Say which file: ?path=<path in the dataset>."})
        file = get_object_or_404(DatasetFile, version=version, path=path)
        return blob_response(storage_name=file.storage_name, filename=path.rsplit("/", 1)[-1], sha256=file.sha256)
