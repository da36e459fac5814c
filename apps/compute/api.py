"""REST API for nodes and runs (/api/v1/nodes/, /api/v1/runs/). The agent protocol
(/api/v1/agent/…) is in agent_api.py, its long-poll claim in agent_views.py."""

from typing import Any
from urllib.parse import quote

from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.request_user import authenticated_user
from apps.core.api import validated
from apps.core.inputs import MAX_NUMBER, parse_int
from apps.core.schema import errors
from apps.core.uploads import blob_response
from apps.projects.models import DatasetVersion, Notebook, Project
from apps.projects.permissions import CAN_UPLOAD, get_project_for, require_role

from . import services, trust
from .models import Node, Run
from .selectors import final_artifacts, nodes_of, runs_for_listing
from .serializers import (
    NodeSerializer,
    NodeWriteSerializer,
    RegisteredNodeSerializer,
    RunCreateSerializer,
    RunEventSerializer,
    RunSerializer,
)


def _served_projects(user: Any, slugs: list[str]) -> list[Project]:
    """The projects a node of `user` may list: those where `user` may write results."""
    projects = []
    for slug in slugs:
        project = Project.objects.visible_to(user).filter(slug=slug, user_role__in=trust.WRITER_ROLES).first()  # type: ignore[misc]
        if project is None:
            raise exceptions.ValidationError(
                {"projects": f"You are not a member (member role or higher) of a project '{slug}'."}
            )
        projects.append(project)
    return projects


def _check_sharing(user: Any, shared: bool | None) -> None:
    if shared and not trust.may_share_nodes(user):
        raise exceptions.PermissionDenied(trust.SHARING_REFUSED)


class NodeViewSet(viewsets.ModelViewSet):
    """Your compute nodes. Creating one returns its token once; DELETE revokes it."""

    queryset = Node.objects.none()
    serializer_class = NodeSerializer
    permission_classes = [permissions.IsAuthenticated]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["shared"]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at", "last_seen_at"]

    def get_queryset(self) -> QuerySet[Node]:
        return nodes_of(self.request.user)

    @extend_schema(request=NodeWriteSerializer, responses={201: RegisteredNodeSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = validated(NodeWriteSerializer, request.data)
        user = authenticated_user(request)
        _check_sharing(user, data["shared"])
        data["projects"] = _served_projects(user, data["projects"])
        if Node.objects.filter(owner=user, name=data["name"]).exists():
            raise exceptions.ValidationError({"name": f"You already have a node named '{data['name']}'."})
        registered = services.node_register(owner=user, **data)
        payload = dict(NodeSerializer(registered.node).data)
        payload["token"] = registered.token
        return Response(payload, status=status.HTTP_201_CREATED)

    @extend_schema(request=NodeWriteSerializer, responses=NodeSerializer)
    @transaction.atomic
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        node = self.get_object()
        serializer = NodeWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        _check_sharing(request.user, changes.get("shared"))
        if "projects" in changes:
            node.projects.set(_served_projects(request.user, changes.pop("projects")))
        for field, value in changes.items():
            setattr(node, field, value)
        node.full_clean()
        node.save()
        return Response(NodeSerializer(node).data)

    def perform_destroy(self, instance: Node) -> None:
        services.node_revoke(node=instance)

    @extend_schema(request=None, responses={200: RegisteredNodeSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        payload = dict(NodeSerializer(node).data)
        payload["token"] = services.node_rotate_token(node=node)
        return Response(payload)


class RunViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs of notebooks on compute nodes. Submit with a notebook, parameters and inputs."""

    queryset = Run.objects.none()
    serializer_class = RunSerializer
    filterset_fields = ["state", "project__slug", "node__name"]
    ordering_fields = ["created_at", "priority", "finished_at"]

    def get_queryset(self) -> QuerySet[Run]:
        return runs_for_listing(self.request.user)

    @extend_schema(request=RunCreateSerializer, responses={201: RunSerializer, **errors(404)})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = validated(RunCreateSerializer, request.data)
        project = get_project_for(request.user, data["project"])
        require_role(project, CAN_UPLOAD, "run notebooks")
        notebook = get_object_or_404(
            Notebook.objects.select_related("latest_version"), project=project, pk=data["notebook"]
        )
        version = notebook.latest_version
        if "version" in data:
            version = notebook.versions.filter(number=data["version"]).first()
        if version is None:
            raise exceptions.ValidationError({"version": "No such notebook version."})
        inputs = []
        for item in data["datasets"]:
            versions = DatasetVersion.objects.filter(dataset__project=project, dataset__name=item["name"])
            chosen = (
                versions.filter(number=item["version"]).first()
                if "version" in item
                else versions.order_by("-number").first()
            )
            if chosen is None:
                raise exceptions.ValidationError({"datasets": f"No version of dataset '{item['name']}' to use."})
            inputs.append(chosen)
        dependencies = list(Run.objects.filter(project=project, pk__in=data["depends_on"]))
        missing = set(data["depends_on"]) - {d.pk for d in dependencies}
        if missing:
            raise exceptions.ValidationError({"depends_on": f"No runs {sorted(missing)} in this project."})
        run = services.run_submit(
            project=project,
            user=authenticated_user(request),
            notebook_version=version,
            parameters=data["parameters"],
            dataset_versions=inputs,
            requirements=data["requirements"],
            priority=data["priority"],
            depends_on=dependencies,
            timeout_seconds=data["timeout_seconds"],
            environment=data["environment"],
        )
        return Response(RunSerializer(self.get_queryset().get(pk=run.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="Only events with seq greater than this.")],
        responses=RunEventSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def events(self, request: Request, pk: str | None = None) -> Response:
        """The run's events in order; resume after the last seq you saw."""
        run = self.get_object()
        after = parse_int(request.query_params.get("after", "0"), field="after", maximum=MAX_NUMBER)
        page = self.paginate_queryset(run.events.filter(seq__gt=after).order_by("seq"))
        return self.get_paginated_response(RunEventSerializer(page, many=True).data)

    @extend_schema(request=None, responses=RunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        project = get_project_for(request.user, run.project.slug)
        if run.created_by_id != request.user.pk:
            require_role(project, CAN_UPLOAD, "cancel runs")
        if run.is_final:
            raise exceptions.ValidationError({"state": f"The run already ended ({run.state})."})
        services.run_cancel(run=run)
        return Response(RunSerializer(self.get_queryset().get(pk=run.pk)).data)

    @extend_schema(
        responses=inline_serializer(
            "RunArtifactFile",
            {
                "path": serializers.CharField(),
                "sha256": serializers.CharField(),
                "size": serializers.IntegerField(),
                "download_url": serializers.CharField(),
            },
            many=True,
        )
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def artifacts(self, request: Request, pk: str | None = None) -> Response:
        """Files the notebook wrote, with sha256 and size (the completed attempt's only)."""
        run = self.get_object()
        base = reverse("api-run-artifact", kwargs={"pk": run.pk})
        return Response(
            [
                {"path": a.path, "sha256": a.sha256, "size": a.size, "download_url": f"{base}?path={quote(a.path)}"}
                for a in final_artifacts(run)
            ]
        )

    @extend_schema(
        parameters=[OpenApiParameter("path", str, OpenApiParameter.QUERY, required=True)],
        responses={(200, "*/*"): OpenApiTypes.BINARY},  # the type its name suggests, else octet-stream
    )
    @action(detail=True, methods=["get"], url_path="artifact")
    def artifact(self, request: Request, pk: str | None = None) -> FileResponse:
        run = self.get_object()
        path = request.query_params.get("path", "")
        artifact = next((a for a in final_artifacts(run) if a.path == path), None)
        if artifact is None:
            raise Http404("No such artifact.")
        return blob_response(
            storage_name=artifact.storage_name, filename=path.rsplit("/", 1)[-1], sha256=artifact.sha256
        )

    @extend_schema(responses={(200, "application/x-ipynb+json"): OpenApiTypes.OBJECT})  # a notebook is JSON
    @action(detail=True, methods=["get"])
    def output(self, request: Request, pk: str | None = None) -> FileResponse:
        """The executed notebook, as uploaded by the node (sha256 checked)."""
        run = self.get_object()
        if not run.output_storage_name:
            raise Http404("This run has no output notebook (yet).")
        name = run.notebook_version.notebook.name.removesuffix(".ipynb")
        return blob_response(
            storage_name=run.output_storage_name,
            filename=f"{name}-run{run.pk}.ipynb",
            sha256=run.output_sha256,
            content_type="application/x-ipynb+json",
        )
