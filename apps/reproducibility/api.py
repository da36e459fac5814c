"""Environment snapshots: agents post them (run token), people read and compare them."""

from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.compute.api import AgentApi, stale_lease_response
from apps.compute.selectors import runs_visible_to
from apps.compute.services import StaleLease

from . import services
from .diff import environment_diff
from .models import EnvironmentSnapshot
from .serializers import AgentEnvironmentSerializer, EnvironmentSnapshotSerializer


class AgentEnvironmentApi(AgentApi):
    @extend_schema(request=AgentEnvironmentSerializer, responses={201: dict, 409: dict})
    def post(self, request: Request, run_id: int) -> Response:
        run = self.run_for(request, run_id)
        serializer = AgentEnvironmentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            snapshot = services.environment_record(
                run=run, lease_id=str(serializer.validated_data["lease_id"]), data=request.data["environment"]
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


class RunEnvironmentDiffApi(APIView):
    """What changed between this run's environment and another's, most consequential first."""

    @extend_schema(
        parameters=[OpenApiParameter("against", int, required=True, description="The other run's id.")],
        responses=dict,
    )
    def get(self, request: Request, run_id: int) -> Response:
        against = request.query_params.get("against", "")
        if not against.isdigit():
            raise exceptions.ValidationError({"against": "Give the other run's id: ?against=<run id>."})
        mine = snapshot_for(request.user, run_id)
        other = snapshot_for(request.user, int(against))
        return Response({"run": run_id, "against": int(against), **environment_diff(other.data, mine.data)})
