"""The claim endpoint: a long poll, so it is an async view. A waiting agent costs no worker
thread; database work runs in a thread through database_sync_to_async."""

import base64
import time
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from reprolab_agent import protocol

from apps.core.inputs import loads_bounded

from . import services
from .authentication import bearer_value
from .models import Node
from .queue_signal import wait_for_work
from .requirements import read_requirements
from .selectors import final_artifacts


def _error(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def claim_payload(claim: services.Claim, request: HttpRequest) -> dict[str, Any]:
    """What an agent gets with its lease (the keys are reprolab_agent.protocol's CLAIM_* and URL_*).
    `run["requirements"]` is the run's requirements, every key present: the agent picks `gpus`
    devices of at least `min_gpu_memory_mb` each, and lets the run reach the network when
    `network` is true."""
    run = claim.run
    version = run.notebook_version

    def url(name: str, **kwargs: Any) -> str:
        return request.build_absolute_uri(reverse(name, kwargs={"run_id": run.pk, **kwargs}))

    files = [
        {
            "path": f.path,
            "sha256": f.sha256,
            "size": f.size,
            "dataset": f"{dataset_version.dataset.name}@v{dataset_version.number}",
            "url": url("agent-run-file", sha256=f.sha256),
        }
        for dataset_version in run.input_datasets.select_related("dataset")
        for f in dataset_version.files.all()
    ]
    payload: dict[str, Any] = {
        protocol.CLAIM_RUN: {
            "id": run.pk,
            "attempt": run.attempt,
            "project": run.project.slug,
            "notebook_path": version.notebook.path,
            "notebook_sha256": version.sha256,
            "kernel_name": version.kernel_name,
            "parameters": run.parameters,
            "timeout_seconds": run.timeout_seconds,
            protocol.RUN_KIND: run.kind,
            "files": files,
            protocol.RUN_REQUIREMENTS: read_requirements(run.requirements).as_json(),
            protocol.RUN_ENVIRONMENT: run.environment_lock.as_claim() if run.environment_lock else None,
        },
        protocol.CLAIM_LEASE: {"id": claim.lease_id, "expires_at": claim.lease_expires_at.isoformat()},
        protocol.CLAIM_RUN_TOKEN: claim.run_token,
        protocol.CLAIM_HEARTBEAT_SECONDS: claim.heartbeat_seconds,
        protocol.CLAIM_URLS: {
            protocol.URL_NOTEBOOK: url("agent-run-notebook"),
            protocol.URL_HEARTBEAT: url("agent-run-heartbeat"),
            protocol.URL_EVENTS: url("agent-run-events"),
            protocol.URL_OUTPUT: url("agent-run-output"),
            protocol.URL_COMPLETE: url("agent-run-complete"),
            protocol.URL_RELEASE: url("agent-run-release"),
            protocol.URL_ENVIRONMENT: url("agent-run-environment"),
            protocol.URL_ARTIFACTS: url("agent-run-artifact", path="x")[: -len("x")],
        },
    }
    if run.kind == protocol.KIND_GRADING:
        payload[protocol.CLAIM_RUN][protocol.RUN_GRADING] = {"cell_timeout": settings.REPROLAB_GRADING_CELL_TIMEOUT}
    if version.size <= protocol.NOTEBOOK_INLINE_MAX_BYTES:  # else the agent GETs it from URL_NOTEBOOK
        with default_storage.open(version.storage_name, "rb") as blob:
            payload[protocol.CLAIM_RUN][protocol.RUN_NOTEBOOK_INLINE] = base64.b64encode(blob.read()).decode()
    if run.reference_run is not None:
        payload[protocol.CLAIM_REFERENCE] = {
            "run": run.reference_run_id,
            "rtol": run.reference_tolerance.get("rtol", 0.0),
            "atol": run.reference_tolerance.get("atol", 0.0),
            "arrays": [
                {"path": a.path, "sha256": a.sha256, "size": a.size, "url": url("agent-run-file", sha256=a.sha256)}
                for a in final_artifacts(run.reference_run)
                if a.path.endswith(".npy")
            ],
        }
    return payload


@database_sync_to_async
def _authenticate(raw: str | None) -> Node | None:
    return services.node_authenticate(raw=raw) if raw else None


@database_sync_to_async
def _try_claim(node: Node, request: HttpRequest) -> dict[str, Any] | None:
    # Read afresh at every try of the long poll: a node revoked, or an owner who lost staff or was
    # deactivated while it waited, must not claim on the trust it had when the poll began.
    current = Node.objects.filter(pk=node.pk, revoked_at__isnull=True, owner__is_active=True)
    fresh = current.select_related("owner").first()
    if fresh is None:
        return None
    services.node_seen(node=fresh)
    claim = services.run_claim(node=fresh)
    return claim_payload(claim, request) if claim else None


@csrf_exempt
async def agent_claim(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/agent/claim/?wait=SECONDS with a node token: 200 with a run and its lease,
    or 204 when nothing came within the wait (at most REPROLAB_CLAIM_MAX_WAIT_SECONDS)."""
    if request.method != "POST":
        return _error(405, "Use POST.")
    node = await _authenticate(bearer_value(request))
    if node is None:
        return _error(401, "Invalid or revoked node token.")
    try:
        wait = float(request.GET.get("wait", "0"))
    except ValueError:
        return _error(400, "wait must be a number of seconds.")
    if request.body:
        try:
            loads_bounded(request.body)
        except ValueError as exc:  # JSONDecodeError, or JSONTooDeep (json's RecursionError)
            return _error(400, f"JSON parse error - {exc}")
    deadline = time.monotonic() + max(0.0, min(wait, settings.REPROLAB_CLAIM_MAX_WAIT_SECONDS))
    while True:
        payload = await _try_claim(node, request)
        if payload is not None:
            return JsonResponse(payload)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return HttpResponse(status=204)
        await wait_for_work(remaining)
