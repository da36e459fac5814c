"""The agent protocol's REST endpoints (/api/v1/agent/…): a node's hello, and what its agent
does with a claimed run under the run token (notebook and input files down; heartbeat, events,
output, artifacts, complete and release up). The long-poll claim is in agent_views.py."""

import io
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from reprolab_agent import protocol
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api import validated
from apps.core.exceptions import PayloadTooLarge
from apps.core.inputs import loads_bounded
from apps.core.schema import errors
from apps.core.uploads import blob_response, reject_oversized_body
from apps.projects.models import DatasetFile

from . import services
from .authentication import NodeTokenAuthentication, RunTokenAuthentication
from .models import Node, Run, RunArtifact
from .selectors import final_artifacts
from .serializers import (
    AgentEventsSerializer,
    AgentHelloSerializer,
    ArrayComparisonSerializer,
    CompleteSerializer,
    HeartbeatSerializer,
    ReleaseSerializer,
)


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
    OpenApiParameter(
        protocol.HEADER_LEASE_ID, str, OpenApiParameter.HEADER, required=True, description="The current lease."
    ),
    OpenApiParameter(
        protocol.HEADER_SHA256, str, OpenApiParameter.HEADER, required=True, description="The body's sha256 (64 hex)."
    ),
]


class RawUploadApi(AgentApi):
    """Base of the raw-body uploads (PUT with the lease id and sha256 headers): the body
    is spooled to disk in chunks, never held in memory, and capped at `limit_setting`."""

    parser_classes = [RawBodyParser]
    limit_setting = "REPROLAB_OUTPUT_MAX_BYTES"

    def store(self, run: Run, lease_id: str, spool: Any, sha256: str, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    def upload(self, request: Request, run_id: int, **kwargs: Any) -> Response:
        run = self.run_for(request, run_id)
        lease_id = request.headers.get(protocol.HEADER_LEASE_ID, "")
        sha256 = request.headers.get(protocol.HEADER_SHA256, "")
        if not lease_id or len(sha256) != 64:
            raise exceptions.ValidationError(
                {"detail": f"Send {protocol.HEADER_LEASE_ID} and {protocol.HEADER_SHA256} (64 hex digits) headers."}
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
                protocol.HEADER_REFERENCE_COMPARISON,
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
        comparison = _reference_comparison(request.headers.get(protocol.HEADER_REFERENCE_COMPARISON, ""))
        return self.upload(request, run_id, path=path, comparison=comparison)


def _reference_comparison(header: str) -> dict[str, Any]:
    if not header:
        return {}
    try:
        data = loads_bounded(header)
    except ValueError:  # JSONTooDeep is one too
        raise exceptions.ValidationError(
            {protocol.HEADER_REFERENCE_COMPARISON: "Send the comparison as a JSON object."}
        ) from None
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
                run=run,
                lease_id=str(data["lease_id"]),
                state=data["state"],
                error=data["error"],
                grading=data.get("grading"),
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
