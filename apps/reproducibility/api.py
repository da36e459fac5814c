"""Environment snapshots: agents post them (run token), people read and compare them."""

import tempfile
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.request_user import authenticated_user
from apps.compute.agent_api import AgentApi, stale_lease_response
from apps.compute.models import Run
from apps.compute.selectors import creator_hidden_rule, runs_visible_to
from apps.compute.services import StaleLease
from apps.core.api import validated
from apps.core.inputs import parse_int
from apps.core.schema import errors
from apps.projects.permissions import CAN_UPLOAD, get_project_for, require_role

from . import services
from .crate import build_run_crate
from .diff import environment_diff
from .lineage import lineage_graph, to_prov_json
from .models import EnvironmentSnapshot, Reproduction
from .serializers import (
    AgentEnvironmentSerializer,
    EnvironmentSnapshotSerializer,
    ReproduceSerializer,
    ReproductionSerializer,
)


class AgentEnvironmentApi(AgentApi):
    @extend_schema(
        request=AgentEnvironmentSerializer,
        responses={
            201: inline_serializer("EnvironmentRecorded", {"fingerprint": serializers.CharField()}),
            **errors(403, 409),
        },
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = self.run_for(request, run_id)
        data = validated(AgentEnvironmentSerializer, request.data)
        try:
            # What the serializer kept (typed, bounded, unknown keys dropped), never the raw body.
            snapshot = services.environment_record(
                run=run, lease_id=str(data["lease_id"]), data=dict(data["environment"])
            )
        except StaleLease as exc:
            return stale_lease_response(exc)
        return Response({"fingerprint": snapshot.fingerprint}, status=status.HTTP_201_CREATED)


def snapshot_for(user: Any, run_id: int) -> EnvironmentSnapshot:
    """The snapshot of a run the user may see; 404 for an invisible run or one not started."""
    run = runs_visible_to(user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    snapshot = EnvironmentSnapshot.objects.filter(run=run).first()
    if snapshot is None:
        raise Http404("This run has no environment snapshot (it has not started yet).")
    return snapshot


class RunEnvironmentApi(APIView):
    """What the run ran on: packages, Python, OS, CPU, memory, GPUs and CUDA, kernel, allowlisted
    environment variables, and every input with its sha256."""

    @extend_schema(responses=EnvironmentSnapshotSerializer)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(EnvironmentSnapshotSerializer(snapshot_for(request.user, run_id)).data)


def against_run_id(raw: str | None) -> int:
    """The run to compare with (`?against=`), or ValidationError saying how to give it."""
    try:
        return parse_int(raw, field="against", minimum=1)
    except ValidationError:
        raise ValidationError({"against": "Give the other run's id: ?against=<run id>."}) from None


class RunEnvironmentDiffApi(APIView):
    """What changed between this run's environment and another's, most consequential first."""

    @extend_schema(
        parameters=[OpenApiParameter("against", int, required=True, description="The other run's id.")],
        responses=dict,
    )
    def get(self, request: Request, run_id: int) -> Response:
        against = against_run_id(request.query_params.get("against"))
        mine = snapshot_for(request.user, run_id)
        other = snapshot_for(request.user, against)
        return Response({"run": run_id, "against": against, **environment_diff(other.data, mine.data)})


class ReproduceApi(APIView):
    """Rerun a succeeded run (same version, parameters, data) and compare cell by cell."""

    @extend_schema(request=ReproduceSerializer, responses={201: ReproductionSerializer})
    def post(self, request: Request, run_id: int) -> Response:
        original = runs_visible_to(request.user).select_related("project").filter(pk=run_id).first()
        if original is None:
            raise Http404("No such run.")
        project = get_project_for(request.user, original.project.slug)
        require_role(project, CAN_UPLOAD, "reproduce runs")
        serializer = ReproduceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reproduction = services.reproduction_start(
            original=original, user=authenticated_user(request), **serializer.validated_data
        )
        return Response(ReproductionSerializer(reproduction).data, status=status.HTTP_201_CREATED)


def reproductions_visible_to(user: Any) -> QuerySet[Reproduction]:
    """Reproductions of runs the user may see; one a single-blind reviewer started only to its
    creator and the project's editors."""
    reproductions = Reproduction.objects.filter(original__in=runs_visible_to(user))
    return reproductions.filter(creator_hidden_rule(user, project="original__project"))


def reproduction_for(user: Any, reproduction_id: int) -> Reproduction:
    reproduction = reproductions_visible_to(user).filter(pk=reproduction_id).prefetch_related("reruns__node").first()
    if reproduction is None:
        raise Http404("No such reproduction.")
    return reproduction


class ReproductionApi(APIView):
    """The verdict and its evidence: per-cell status (differing first), recorded values side by
    side, flaky cells, and the environment diff between the original and a rerun."""

    @extend_schema(responses=ReproductionSerializer)
    def get(self, request: Request, reproduction_id: int) -> Response:
        return Response(ReproductionSerializer(reproduction_for(request.user, reproduction_id)).data)


class RunCrateApi(APIView):
    """The run as an RO-Crate (Process Run Crate 0.5): notebook, executed notebook, environment,
    parameters and inputs with sha256, the run as a CreateAction."""

    @extend_schema(responses={(200, "application/zip"): bytes, **errors(400)})  # 400: the run has not ended
    def get(self, request: Request, run_id: int) -> FileResponse:
        run = (
            runs_visible_to(request.user)
            .select_related("project", "notebook_version__notebook", "created_by")
            .filter(pk=run_id)
            .first()
        )
        if run is None:
            raise Http404("No such run.")
        return crate_response(request, run)


def crate_response(request: HttpRequest, run: Run) -> FileResponse:
    """The run's crate as a download (the caller decided the requester may have it)."""
    if not run.is_final:
        raise exceptions.ValidationError({"state": f"The run has not ended yet ({run.state})."})
    base_url = request.build_absolute_uri("/").rstrip("/")
    handle = tempfile.NamedTemporaryFile(suffix=".zip")  # noqa: SIM115 - FileResponse closes it
    build_run_crate(run, Path(handle.name), base_url=base_url)
    handle.seek(0)
    return FileResponse(handle, as_attachment=True, filename=f"run-{run.pk}-crate.zip", content_type="application/zip")


def visible_run(user: Any, run_id: int) -> Run:
    run = runs_visible_to(user).select_related("notebook_version__notebook").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    return run


class RunLineageApi(APIView):
    """The run's lineage graph (inputs -> run -> outputs, and related runs); `?as=prov` for
    W3C PROV-JSON."""

    @extend_schema(parameters=[OpenApiParameter("as", str, enum=["graph", "prov"])], responses=dict)
    def get(self, request: Request, run_id: int) -> Response:
        run = visible_run(request.user, run_id)
        graph = lineage_graph(run, runs_visible_to(request.user))
        if request.query_params.get("as") == "prov":
            return Response(to_prov_json(graph, base_url=request.build_absolute_uri("/").rstrip("/")))
        return Response(graph)
