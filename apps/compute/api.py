"""REST API for nodes and runs (/api/v1/nodes/, /api/v1/runs/) and the agent protocol
(/api/v1/agent/…). The long-poll claim is an async view in agent_views.py."""

import io
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.request_user import authenticated_user
from apps.core.api import validated
from apps.core.exceptions import PayloadTooLarge
from apps.core.inputs import MAX_NUMBER, loads_bounded, parse_int
from apps.core.schema import errors
from apps.core.uploads import blob_response, reject_oversized_body
from apps.projects.models import DatasetFile, DatasetVersion, Notebook, Project
from apps.projects.permissions import CAN_UPLOAD, get_project_for, require_role

from . import services, trust
from .authentication import NodeTokenAuthentication, RunTokenAuthentication
from .models import Node, Run, RunArtifact
from .selectors import final_artifacts, nodes_of, runs_for_listing
from .serializers import (
    AgentEventsSerializer,
    AgentHelloSerializer,
    ArrayComparisonSerializer,
    CompleteSerializer,
    HeartbeatSerializer,
    NodeSerializer,
    NodeWriteSerializer,
    RegisteredNodeSerializer,
    ReleaseSerializer,
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


# --- the agent protocol ---------------------------------------------------------------------------------
class AgentApi(APIView):
    """Base of the run-token endpoints: the token must belong to the run in the URL."""

    authentication_classes = [RunTokenAuthentication]
    permission_classes: list[type] = []

    def run_for(self, request: Request, run_id: int) -> Run:
        run = request.auth
        if not isinstance(run, Run):
            raise exceptions.NotAuthenticated("Send the run token from the claim: Authorization: Bearer rlr_…")
        if run.pk != run_id:
            raise exceptions.PermissionDenied("This run token belongs to another run.")
        return run


def stale_lease_response(exc: services.StaleLease) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


class AgentHeartbeatApi(AgentApi):
    @extend_schema(
        request=HeartbeatSerializer,
        responses={
            200: inline_serializer(
                "HeartbeatReply",
                {"lease_expires_at": serializers.DateTimeField(), "cancel_requested": serializers.BooleanField()},
            ),
            **errors(403, 409),
        },
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = self.run_for(request, run_id)
        data = validated(HeartbeatSerializer, request.data)
        try:
            reply = services.run_heartbeat(run=run, lease_id=str(data["lease_id"]), running=data["running"])
        except services.StaleLease as exc:
            return stale_lease_response(exc)
        return Response({"lease_expires_at": reply.lease_expires_at, "cancel_requested": reply.cancel_requested})


class AgentEventsApi(AgentApi):
    @extend_schema(
        request=AgentEventsSerializer,
        responses={
            200: inline_serializer(
                "EventsStored", {"stored": serializers.IntegerField(), "received": serializers.IntegerField()}
            ),
            **errors(403, 409),
        },
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = self.run_for(request, run_id)
        data = validated(AgentEventsSerializer, request.data)
        events = [
            {"agent_seq": e["seq"], "kind": e["kind"], "cell_index": e.get("cell_index"), "payload": e["payload"]}
            for e in data["events"]
        ]
        try:
            stored = services.run_events_append(run=run, lease_id=str(data["lease_id"]), events=events)
        except services.StaleLease as exc:
            return stale_lease_response(exc)
        return Response({"stored": stored, "received": len(events)})


class RawBodyParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return stream


# What every raw upload sends beside its body.
UPLOAD_HEADERS = [
    OpenApiParameter("X-Lease-Id", str, OpenApiParameter.HEADER, required=True, description="The current lease."),
    OpenApiParameter(
        "X-Content-SHA256", str, OpenApiParameter.HEADER, required=True, description="The body's sha256 (64 hex)."
    ),
]


class RawUploadApi(AgentApi):
    """Base of the raw-body uploads (PUT with X-Lease-Id and X-Content-SHA256 headers): the body
    is spooled to disk in chunks, never held in memory, and capped at `limit_setting`."""

    parser_classes = [RawBodyParser]
    limit_setting = "REPROLAB_OUTPUT_MAX_BYTES"

    def store(self, run: Run, lease_id: str, spool: Any, sha256: str, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    def upload(self, request: Request, run_id: int, **kwargs: Any) -> Response:
        run = self.run_for(request, run_id)
        lease_id = request.headers.get("X-Lease-Id", "")
        sha256 = request.headers.get("X-Content-SHA256", "")
        if not lease_id or len(sha256) != 64:
            raise exceptions.ValidationError(
                {"detail": "Send X-Lease-Id and X-Content-SHA256 (64 hex digits) headers."}
            )
        limit = getattr(settings, self.limit_setting)
        reject_oversized_body(request, limit)
        with TemporaryUploadedFile("upload", "application/octet-stream", 0, None) as spool:
            size = 0
            # DRF gives no stream for an empty body; an empty file is still a file (an artifact may be one).
            stream = request.stream or io.BytesIO()
            while chunk := stream.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The upload is larger than {limit} bytes.")
                spool.write(chunk)
            spool.seek(0)
            try:
                return Response(self.store(run, lease_id, spool, sha256, **kwargs))
            except services.StaleLease as exc:
                return stale_lease_response(exc)


class AgentOutputApi(RawUploadApi):
    """PUT the executed notebook as the raw body."""

    def store(self, run: Run, lease_id: str, spool: Any, sha256: str, **kwargs: Any) -> dict[str, Any]:
        stored = services.run_output_upload(run=run, lease_id=lease_id, stream=spool, sha256=sha256)
        return {"sha256": stored["sha256"], "size": stored["size"]}

    @extend_schema(
        request={"application/octet-stream": bytes},
        parameters=UPLOAD_HEADERS,
        responses={
            200: inline_serializer(
                "OutputStored", {"sha256": serializers.CharField(), "size": serializers.IntegerField()}
            ),
            **errors(400, 403, 409, 413),
        },
    )
    def put(self, request: Request, run_id: int) -> Response:
        return self.upload(request, run_id)


class AgentArtifactApi(RawUploadApi):
    """PUT one artifact (a file the notebook wrote) at its path in the working directory."""

    limit_setting = "REPROLAB_ARTIFACT_MAX_BYTES"

    def store(self, run: Run, lease_id: str, spool: Any, sha256: str, **kwargs: Any) -> dict[str, Any]:
        artifact = services.run_artifact_upload(
            run=run,
            lease_id=lease_id,
            path=kwargs["path"],
            stream=spool,
            sha256=sha256,
            comparison=kwargs["comparison"],
        )
        return {"path": artifact.path, "sha256": artifact.sha256, "size": artifact.size}

    @extend_schema(
        request={"application/octet-stream": bytes},
        parameters=[
            *UPLOAD_HEADERS,
            OpenApiParameter(
                "X-Reference-Comparison",
                str,
                OpenApiParameter.HEADER,
                description="For a rerun's .npy: the node's comparison against the reference run's array, as JSON.",
            ),
        ],
        responses={
            200: inline_serializer(
                "ArtifactStored",
                {
                    "path": serializers.CharField(),
                    "sha256": serializers.CharField(),
                    "size": serializers.IntegerField(),
                },
            ),
            **errors(400, 403, 409, 413),
        },
    )
    def put(self, request: Request, run_id: int, path: str) -> Response:
        self.run_for(request, run_id)
        # Checked before the body is read: a malformed header costs no upload.
        comparison = _reference_comparison(request.headers.get("X-Reference-Comparison", ""))
        return self.upload(request, run_id, path=path, comparison=comparison)


def _reference_comparison(header: str) -> dict[str, Any]:
    if not header:
        return {}
    try:
        data = loads_bounded(header)
    except ValueError:  # JSONTooDeep is one too
        raise exceptions.ValidationError({"X-Reference-Comparison": "Send the comparison as a JSON object."}) from None
    return dict(validated(ArrayComparisonSerializer, data))


class AgentCompleteApi(AgentApi):
    @extend_schema(
        request=CompleteSerializer,
        responses={200: inline_serializer("Completed", {"state": serializers.CharField()}), **errors(403, 409)},
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = self.run_for(request, run_id)
        data = validated(CompleteSerializer, request.data)
        try:
            run = services.run_complete(
                run=run, lease_id=str(data["lease_id"]), state=data["state"], error=data["error"]
            )
        except services.StaleLease as exc:
            return stale_lease_response(exc)
        return Response({"state": run.state})


class AgentReleaseApi(AgentApi):
    """Hand the run back under the current lease: it is requeued at once (the agent is stopping,
    or the node could not run it)."""

    @extend_schema(request=ReleaseSerializer, responses={200: dict, 400: dict, 409: dict})
    def post(self, request: Request, run_id: int) -> Response:
        run = self.run_for(request, run_id)
        data = validated(ReleaseSerializer, request.data)
        try:
            run = services.run_release(
                run=run, lease_id=str(data["lease_id"]), reason=data["reason"], detail=data["detail"]
            )
        except services.StaleLease as exc:
            return stale_lease_response(exc)
        return Response({"state": run.state, "attempt": run.attempt, "max_attempts": run.max_attempts})


class AgentNotebookApi(AgentApi):
    """The notebook version to execute."""

    @extend_schema(responses={(200, "application/x-ipynb+json"): OpenApiTypes.OBJECT, **errors(403)})
    def get(self, request: Request, run_id: int) -> FileResponse:
        run = self.run_for(request, run_id)
        version = run.notebook_version
        return blob_response(
            storage_name=version.storage_name,
            filename="input.ipynb",
            sha256=version.sha256,
            content_type="application/x-ipynb+json",
        )


class AgentFileApi(AgentApi):
    """One input file of the run, or an artifact of its reference run, by sha256 (nodes cache
    files by content)."""

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY, **errors(403)})
    def get(self, request: Request, run_id: int, sha256: str) -> FileResponse:
        run = self.run_for(request, run_id)
        file: DatasetFile | RunArtifact | None = DatasetFile.objects.filter(
            version__in=run.input_datasets.all(), sha256=sha256
        ).first()
        if file is None and run.reference_run is not None:
            # A rerun may read its reference run's artifacts, to compare its own against them.
            file = final_artifacts(run.reference_run).filter(sha256=sha256).first()
        if file is None:
            raise Http404("No such input file for this run.")
        return blob_response(storage_name=file.storage_name, filename=file.path.rsplit("/", 1)[-1], sha256=file.sha256)


class AgentHelloApi(APIView):
    """A node's agent says it is alive and what it can do (CPU, memory, GPUs)."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes: list[type] = []

    @extend_schema(
        request=AgentHelloSerializer,
        responses={
            200: inline_serializer(
                "HelloReply",
                {
                    "node": serializers.CharField(),
                    "heartbeat_seconds": serializers.IntegerField(),
                    "claim_wait_seconds": serializers.IntegerField(),
                },
            ),
            **errors(400),
        },
    )
    def post(self, request: Request) -> Response:
        node = request.auth
        if not isinstance(node, Node):
            raise exceptions.NotAuthenticated("Send the node token: Authorization: Bearer rln_…")
        # Checked before it is stored: the scheduler reads every active node's capabilities.
        data = validated(AgentHelloSerializer, request.data)
        services.node_seen(node=node, capabilities=data["capabilities"])
        return Response(
            {
                "node": node.name,
                "heartbeat_seconds": settings.REPROLAB_HEARTBEAT_SECONDS,
                "claim_wait_seconds": settings.REPROLAB_CLAIM_MAX_WAIT_SECONDS,
            }
        )
