"""Writes for nodes and runs: registration, submission, the lease protocol, completion.

Every state change is one transaction and a compare-and-set on (state, lease_id), so a stale
agent (an expired lease, a second claimer) changes nothing and is told so (StaleLease -> 409).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from apps.accounts.models import User
from apps.core.broadcast import broadcast_on_commit
from apps.core.hashing import blob_for_row, verify_sha256
from apps.core.secrets import hash_secret, new_secret
from apps.projects.models import DatasetVersion, NotebookVersion, Project
from apps.projects.validation import clean_relative_path, parse_notebook

from . import scheduling, signals, trust
from .models import ACTIVE_STATES, Node, Run, RunArtifact, RunEvent, RunState, new_lease_id
from .parameters import validate_parameters
from .queue_signal import announce_work

logger = logging.getLogger(__name__)

NODE_TOKEN_PREFIX = "rln_"  # noqa: S105 - a prefix, not a secret
RUN_TOKEN_PREFIX = "rlr_"  # noqa: S105 - a prefix, not a secret


class StaleLease(Exception):
    """The caller's lease is not the run's current one (expired, requeued or never held)."""


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


# --- nodes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisteredNode:
    node: Node
    token: str  # shown once


@transaction.atomic
def node_register(
    *,
    owner: User,
    name: str,
    tags: Sequence[str] = (),
    max_concurrency: int = 1,
    shared: bool = False,
    projects: Iterable[Project] = (),
) -> RegisteredNode:
    secret = new_secret(NODE_TOKEN_PREFIX)
    node = Node(
        owner=owner,
        name=name,
        tags=sorted({t.strip().lower() for t in tags if t.strip()}),
        max_concurrency=max_concurrency,
        shared=shared,
        token_hash=secret.hash,
        token_prefix=secret.display_prefix,
    )
    node.full_clean()
    node.save()
    node.projects.set(list(projects))
    return RegisteredNode(node=node, token=secret.raw)


@transaction.atomic
def node_rotate_token(*, node: Node) -> str:
    secret = new_secret(NODE_TOKEN_PREFIX)
    Node.objects.filter(pk=node.pk).update(token_hash=secret.hash, token_prefix=secret.display_prefix, revoked_at=None)
    node.refresh_from_db()
    return secret.raw


def node_revoke(*, node: Node) -> None:
    Node.objects.filter(pk=node.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    node.refresh_from_db()


def node_authenticate(*, raw: str) -> Node | None:
    if not raw.startswith(NODE_TOKEN_PREFIX):
        return None
    node = Node.objects.filter(token_hash=hash_secret(raw), revoked_at__isnull=True).select_related("owner").first()
    if node is None or not node.owner.is_active:
        return None
    return node


def node_seen(*, node: Node, capabilities: dict[str, Any] | None = None) -> None:
    """Record that the node's agent is alive (and what it can do)."""
    changes: dict[str, Any] = {"last_seen_at": timezone.now()}
    if capabilities is not None:
        changes["capabilities"] = capabilities
    Node.objects.filter(pk=node.pk).update(**changes)
    for field, value in changes.items():
        setattr(node, field, value)


# --- submitting and cancelling ----------------------------------------------------------------------
def _clean_requirements(raw: Any) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        raise ValidationError({"requirements": "Requirements must be an object: {tags, gpu, min_gpu_memory_mb}."})
    unknown = set(raw) - {"tags", "gpu", "min_gpu_memory_mb"}
    if unknown:
        raise ValidationError({"requirements": f"Unknown requirement(s): {', '.join(sorted(unknown))}."})
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise ValidationError({"requirements": "requirements.tags must be a list of non-empty strings."})
    gpu = raw.get("gpu", False)
    memory = raw.get("min_gpu_memory_mb", 0)
    if not isinstance(gpu, bool):
        raise ValidationError({"requirements": "requirements.gpu must be true or false."})
    if not isinstance(memory, int) or isinstance(memory, bool) or memory < 0:
        raise ValidationError({"requirements": "requirements.min_gpu_memory_mb must be a non-negative integer."})
    return {"tags": sorted({t.strip().lower() for t in tags}), "gpu": gpu or memory > 0, "min_gpu_memory_mb": memory}


def run_submit(
    *,
    project: Project,
    user: User,
    notebook_version: NotebookVersion,
    parameters: Any = None,
    dataset_versions: Sequence[DatasetVersion] = (),
    requirements: Any = None,
    priority: int = 0,
    depends_on: Sequence[Run] = (),
    timeout_seconds: int = 3600,
    reference_run: Run | None = None,
    reference_tolerance: dict[str, float] | None = None,
    creator_hidden: bool = False,
    independent: bool = False,
) -> Run:
    if notebook_version.notebook.project_id != project.pk:
        raise ValidationError({"notebook_version": "The notebook version is not in this project."})
    for dataset_version in dataset_versions:
        if dataset_version.dataset.project_id != project.pk:
            raise ValidationError({"datasets": "Input datasets must belong to the run's project."})
    for dependency in depends_on:
        if dependency.project_id != project.pk:
            raise ValidationError({"depends_on": f"Run {dependency.pk} is not in this project."})
    if reference_run is not None and reference_run.project_id != project.pk:
        raise ValidationError({"reference_run": f"Run {reference_run.pk} is not in this project."})
    run = Run(
        project=project,
        notebook_version=notebook_version,
        parameters=validate_parameters(parameters, notebook_version.parameters),
        requirements=_clean_requirements(requirements),
        priority=priority,
        timeout_seconds=timeout_seconds,
        max_attempts=settings.REPROLAB_MAX_ATTEMPTS,
        reference_run=reference_run,
        reference_tolerance=reference_tolerance or {},
        creator_hidden=creator_hidden,
        independent=independent,
        created_by=user,
    )
    run.full_clean()
    with transaction.atomic():
        run.save()
        run.input_datasets.set(dataset_versions)
        run.depends_on.set(depends_on)
        _append_server_event(run, "state", {"state": RunState.QUEUED})
        announce_work()
        broken = [d for d in depends_on if d.state in (RunState.FAILED, RunState.CANCELLED, RunState.LOST)]
        if broken:
            _finish(run, RunState.FAILED, f"Dependency run {broken[0].pk} {broken[0].state}.")
    return run


@transaction.atomic
def run_cancel(*, run: Run) -> Run:
    """Cancel at once when queued; when a node holds it, ask the agent (it sees it on heartbeat)."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.state == RunState.QUEUED:
        _finish(run, RunState.CANCELLED, "Cancelled before it started.")
    elif run.state in ACTIVE_STATES and not run.cancel_requested:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
        _append_server_event(run, "cancel_requested", {})
    return run


# --- events -------------------------------------------------------------------------------------------
def _append_server_event(run: Run, kind: str, payload: dict[str, Any], cell_index: int | None = None) -> None:
    _append_events(run, [{"kind": kind, "payload": payload, "cell_index": cell_index}])


def _append_events(run: Run, events: Sequence[dict[str, Any]]) -> list[RunEvent]:
    """Number and store events for a run locked by the caller, then broadcast after commit."""
    rows = []
    seq = Run.objects.filter(pk=run.pk).values_list("last_event_seq", flat=True).get()
    for event in events:
        seq += 1
        rows.append(
            RunEvent(
                run=run,
                seq=seq,
                attempt=run.attempt,
                agent_seq=event.get("agent_seq"),
                kind=event["kind"],
                cell_index=event.get("cell_index"),
                payload=event.get("payload") or {},
            )
        )
    if not rows:
        return []
    RunEvent.objects.bulk_create(rows)
    Run.objects.filter(pk=run.pk).update(last_event_seq=seq)
    run.last_event_seq = seq
    for row in rows:
        broadcast_on_commit(run_group(run.pk), "run.event", event_message(row))
    return rows


def event_message(event: RunEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "attempt": event.attempt,
        "kind": event.kind,
        "cell_index": event.cell_index,
        "payload": event.payload,
        "created_at": event.created_at.isoformat() if event.created_at else None,
    }


AGENT_EVENT_KINDS = {"cell_started", "cell_executed", "stream", "output", "resources", "log"}


def run_events_append(*, run: Run, lease_id: str, events: Sequence[dict[str, Any]]) -> int:
    """Store an agent's batch. Events already stored for this attempt (same agent_seq) are
    skipped, so resending a batch after a timeout is harmless. Returns how many were new."""
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        seqs = [e["agent_seq"] for e in events]
        known = set(
            RunEvent.objects.filter(run=run, attempt=run.attempt, agent_seq__in=seqs).values_list(
                "agent_seq", flat=True
            )
        )
        fresh = [e for e in events if e["agent_seq"] not in known]
        fresh.sort(key=lambda e: e["agent_seq"])
        _append_events(run, fresh)
        return len(fresh)


# --- the lease protocol ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    run: Run
    lease_id: str
    lease_expires_at: dt.datetime
    run_token: str
    heartbeat_seconds: int


def _lease_deadline() -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=settings.REPROLAB_LEASE_SECONDS)


def _eligible_runs(node: Node) -> Any:
    """Queued runs this node may take (see `trust`) whose dependencies all succeeded."""
    runs = Run.objects.filter(trust.runs_for_node(node), state=RunState.QUEUED, cancel_requested=False)
    unfinished_dependency = Run.objects.filter(dependents=OuterRef("pk")).exclude(state=RunState.SUCCEEDED)
    return runs.exclude(Exists(unfinished_dependency))


def _stored_mb(value: Any) -> int:
    """A GPU memory figure from a node's stored capabilities; anything odd counts as none, so
    one node's data can never stop the scheduler."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if 0 <= value < 2**31 else 0


def _node_slots(nodes: Sequence[Node]) -> list[scheduling.NodeSlot]:
    running = dict(
        Run.objects.filter(node__in=nodes, state__in=ACTIVE_STATES).values_list("node_id").annotate(n=Count("id"))
    )
    slots = []
    for node in nodes:
        gpus = [g for g in node.gpus if isinstance(g, dict)]
        slots.append(
            scheduling.NodeSlot(
                id=node.pk,
                tags=frozenset(t for t in node.tags if isinstance(t, str))
                if isinstance(node.tags, list)
                else frozenset(),
                max_concurrency=node.max_concurrency,
                running=running.get(node.pk, 0),
                gpu_count=len(gpus),
                gpu_memory_mb=max(
                    (_stored_mb(g.get("memory_total_mb") or g.get("memory_mb")) for g in gpus), default=0
                ),
            )
        )
    return slots


def _active_nodes(claimer: Node) -> list[Node]:
    since = timezone.now() - dt.timedelta(seconds=settings.REPROLAB_NODE_ACTIVE_SECONDS)
    nodes = list(
        Node.objects.filter(revoked_at__isnull=True, last_seen_at__gte=since, owner__is_active=True)
        .exclude(pk=claimer.pk)
        .select_related("owner")
        .prefetch_related("projects")
    )
    return [claimer, *nodes]


def run_claim(*, node: Node, limit: int = 200) -> Claim | None:
    """Lease the run the scheduler assigns to this node, if any. Safe under concurrent agents:
    claims for one node take turns (a lock on the node's row, so max_concurrency holds), claims
    for different nodes plan side by side from the same queue (the plan is deterministic, so
    they pick different runs); the chosen run is locked with SKIP LOCKED where the database has
    it, and the lease is taken by compare-and-set on state=queued."""
    expire_leases()
    strategy = scheduling.get_strategy(settings.REPROLAB_SCHEDULER)
    features = connection.features
    for _ in range(3):  # another agent may win the compare-and-set; then look again
        with transaction.atomic():
            list(
                Node.objects.select_for_update(no_key=features.has_select_for_no_key_update)
                .filter(pk=node.pk)
                .values_list("pk", flat=True)
            )
            # Candidates are read without row locks: locking them all would hide the whole queue
            # from every other node's claim until this one commits.
            runs = list(_eligible_runs(node).order_by("-priority", "queued_at", "id")[:limit])
            if not runs:
                return None
            nodes = _active_nodes(node)
            facts = [trust.node_facts(n) for n in nodes]
            crews = trust.crews({r.project_id for r in runs}, {n.owner_id for n in nodes})
            running_by_owner = dict(
                Run.objects.filter(state__in=ACTIVE_STATES).values_list("created_by_id").annotate(n=Count("id"))
            )
            queued = [
                scheduling.QueuedRun(
                    id=r.pk,
                    owner_id=r.created_by_id or 0,
                    priority=r.priority,
                    queued_at=r.queued_at.timestamp(),
                    required_tags=frozenset(r.requirements.get("tags", [])),
                    needs_gpu=bool(r.requirements.get("gpu")),
                    min_gpu_memory_mb=int(r.requirements.get("min_gpu_memory_mb", 0)),
                    allowed_node_ids=trust.allowed_node_ids(trust.run_facts(r), facts, crews[r.project_id]),
                )
                for r in runs
            ]
            assignments = strategy.assign(queued, _node_slots(nodes), running_by_owner)
            mine = next((a.run_id for a in assignments if a.node_id == node.pk), None)
            if mine is None:
                return None
            if features.has_select_for_update_skip_locked and not list(
                Run.objects.select_for_update(skip_locked=True)
                .filter(pk=mine, state=RunState.QUEUED)
                .values_list("pk", flat=True)
            ):
                continue  # another claim is taking it right now: plan again
            lease_id = new_lease_id()
            token = new_secret(RUN_TOKEN_PREFIX)
            expires = _lease_deadline()
            taken = Run.objects.filter(pk=mine, state=RunState.QUEUED).update(
                state=RunState.LEASED,
                node=node,
                lease_id=lease_id,
                lease_expires_at=expires,
                run_token_hash=token.hash,
            )
            if not taken:
                continue
            run = Run.objects.select_related("notebook_version__notebook", "project").get(pk=mine)
            _append_server_event(run, "state", {"state": RunState.LEASED, "node": node.name, "attempt": run.attempt})
            return Claim(
                run=run,
                lease_id=str(lease_id),
                lease_expires_at=expires,
                run_token=token.raw,
                heartbeat_seconds=settings.REPROLAB_HEARTBEAT_SECONDS,
            )
    return None


def run_authenticate(*, raw: str) -> Run | None:
    """The live run a run token belongs to. A token stops working when its lease ends."""
    if not raw.startswith(RUN_TOKEN_PREFIX):
        return None
    return Run.objects.filter(
        run_token_hash=hash_secret(raw), state__in=ACTIVE_STATES, lease_expires_at__gt=timezone.now()
    ).first()


def locked_with_lease(run_id: int, lease_id: str) -> Run:
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.state not in ACTIVE_STATES or str(run.lease_id) != str(lease_id):
        raise StaleLease(f"Run {run_id} is not held under lease {lease_id} (it is {run.state}).")
    if run.lease_expires_at is None or run.lease_expires_at <= timezone.now():
        raise StaleLease(f"The lease on run {run_id} expired.")
    if not _node_still_trusted(run):
        raise StaleLease(f"Run {run_id}'s node may no longer hold it (revoked, or no longer trusted by the project).")
    return run


def _node_still_trusted(run: Run) -> bool:
    """A lease is only as good as the trust it was granted under: a node revoked, or whose owner
    left the project or lost staff, may not renew, report or complete the run it holds."""
    if run.node_id is None:
        return False
    nodes = Node.objects.filter(pk=run.node_id, revoked_at__isnull=True, owner__is_active=True)
    held = nodes.select_related("owner").prefetch_related("projects").first()
    if held is None:
        return False
    crew = trust.crews({run.project_id}, {held.owner_id})[run.project_id]
    return trust.may_take(trust.run_facts(run), trust.node_facts(held), crew)


@dataclass(frozen=True)
class HeartbeatReply:
    lease_expires_at: dt.datetime
    cancel_requested: bool


def run_heartbeat(*, run: Run, lease_id: str, running: bool = False) -> HeartbeatReply:
    """Renew the lease; `running` marks the start of execution. Says whether to cancel."""
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        run.lease_expires_at = _lease_deadline()
        fields = ["lease_expires_at"]
        # A busy node does not poll for work; its heartbeats show it is alive.
        if run.node_id is not None:
            Node.objects.filter(pk=run.node_id).update(last_seen_at=timezone.now())
        if running and run.state == RunState.LEASED:
            run.state = RunState.RUNNING
            run.started_at = timezone.now()
            fields += ["state", "started_at"]
            _append_server_event(run, "state", {"state": RunState.RUNNING})
        run.save(update_fields=fields)
        return HeartbeatReply(lease_expires_at=run.lease_expires_at, cancel_requested=run.cancel_requested)


def run_output_upload(*, run: Run, lease_id: str, stream: IO[bytes], sha256: str) -> dict[str, Any]:
    """Store the output notebook under the current lease once its sha256 checks out and it is a
    valid notebook. A refused upload (corrupted, not a notebook, stale lease) stores nothing."""
    verify_sha256(stream, sha256)
    parse_notebook(stream.read())  # pages, reports and reproduction checks all read it
    stream.seek(0)
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        with blob_for_row(stream) as blob:
            run.pending_output = {"sha256": blob.sha256, "size": blob.size, "storage_name": blob.storage_name}
            run.save(update_fields=["pending_output"])
    return run.pending_output


def run_artifact_upload(
    *, run: Run, lease_id: str, path: str, stream: IO[bytes], sha256: str, comparison: dict[str, Any] | None = None
) -> RunArtifact:
    """Store one artifact of the current attempt once its sha256 checks out (resending the same
    path replaces it), with the node's comparison against the reference run's, if it made one."""
    path = clean_relative_path(path)
    verify_sha256(stream, sha256)  # before anything is stored: a refused upload stores nothing
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        if (
            RunArtifact.objects.filter(run=run, attempt=run.attempt).exclude(path=path).count()
            >= settings.REPROLAB_ARTIFACTS_PER_RUN
        ):
            raise ValidationError({"path": f"A run may keep at most {settings.REPROLAB_ARTIFACTS_PER_RUN} artifacts."})
        with blob_for_row(stream) as blob:
            artifact, _ = RunArtifact.objects.update_or_create(
                run=run,
                attempt=run.attempt,
                path=path,
                defaults={
                    "sha256": blob.sha256,
                    "size": blob.size,
                    "storage_name": blob.storage_name,
                    "comparison": comparison or {},
                },
            )
    return artifact


COMPLETION_STATES = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED}


def run_complete(*, run: Run, lease_id: str, state: str, error: str = "") -> Run:
    if state not in COMPLETION_STATES:
        raise ValidationError({"state": f"state must be one of {', '.join(sorted(COMPLETION_STATES))}."})
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        if state == RunState.SUCCEEDED and not run.pending_output:
            raise ValidationError({"state": "Upload the output notebook before completing as succeeded."})
        if run.pending_output:
            run.output_sha256 = run.pending_output["sha256"]
            run.output_size = run.pending_output["size"]
            run.output_storage_name = run.pending_output["storage_name"]
        _finish(run, RunState(state), error)
    return run


def _finish(run: Run, state: RunState, error: str = "") -> None:
    """Move a locked run to a final state and settle the runs that depend on it."""
    run.state = state
    run.error = error[:10_000]
    run.finished_at = timezone.now()
    run.lease_id = None
    run.lease_expires_at = None
    run.run_token_hash = ""
    run.pending_output = {}
    run.save()
    _append_server_event(run, "state", {"state": state, "error": run.error})
    # A node slot is free now, and dependents may have become runnable.
    announce_work()
    run_id = run.pk
    transaction.on_commit(lambda: signals.run_finished.send(sender=Run, run_id=run_id, state=state))
    if state != RunState.SUCCEEDED:
        for dependent in Run.objects.select_for_update().filter(depends_on=run, state=RunState.QUEUED):
            _finish(dependent, RunState.FAILED, f"Dependency run {run.pk} {state}.")


def expire_leases() -> int:
    """The reconciler: requeue runs whose lease ran out (attempt + 1), or mark them lost after
    max_attempts, or cancelled if a cancel was pending. Returns how many runs it moved."""
    moved = 0
    now = timezone.now()
    expired = Run.objects.filter(state__in=ACTIVE_STATES, lease_expires_at__lte=now).values_list("pk", "lease_id")
    for run_id, lease_id in list(expired[:500]):
        with transaction.atomic():
            run = (
                Run.objects.select_for_update().filter(pk=run_id, lease_id=lease_id, lease_expires_at__lte=now).first()
            )
            if run is None:  # renewed or settled meanwhile
                continue
            moved += 1
            if run.cancel_requested:
                _finish(run, RunState.CANCELLED, "Cancelled; the node stopped answering.")
            elif run.attempt >= run.max_attempts:
                _finish(run, RunState.LOST, f"The node stopped answering on all {run.attempt} attempts.")
            else:
                lost_node = run.node.name if run.node else "?"
                _requeue(run, now=now, reason=f"lease on {lost_node} expired")
    if moved:
        logger.info("Lease sweep moved %d run(s)", moved)
    return moved


def _requeue(run: Run, *, now: dt.datetime, reason: str, free: bool = False, **payload: Any) -> None:
    """Put a locked run back in the queue as its next attempt: no node, no lease, nothing the
    ended attempt sent kept as a result. `free`: the attempt does not count against max_attempts
    (the attempt number still grows: it keys the events and artifacts of each attempt)."""
    RunArtifact.objects.filter(run=run, attempt=run.attempt).delete()
    run.state = RunState.QUEUED
    run.attempt += 1
    if free:
        run.max_attempts += 1
    run.node = None
    run.lease_id = None
    run.lease_expires_at = None
    run.run_token_hash = ""
    run.pending_output = {}
    run.queued_at = now
    run.save()
    _append_server_event(run, "state", {"state": RunState.QUEUED, "attempt": run.attempt, "reason": reason, **payload})
    announce_work()


RELEASE_SHUTDOWN = "shutdown"
RELEASE_INFRASTRUCTURE = "infrastructure"
RELEASE_REASONS = {
    # The agent is stopping (SIGTERM): the run did nothing wrong and is charged no attempt.
    RELEASE_SHUTDOWN: "the node's agent stopped",
    # The node could not run it (the kernel did not start, uploads kept failing): retried like
    # a lost node, up to max_attempts.
    RELEASE_INFRASTRUCTURE: "the node could not run it",
}


def run_release(*, run: Run, lease_id: str, reason: str, detail: str = "") -> Run:
    """An agent hands its run back under the current lease (a stale one: StaleLease -> 409),
    and the run is requeued at once instead of waiting for its lease to run out. A `shutdown`
    release costs no attempt (attempt and max_attempts both grow by one); an `infrastructure`
    one does, and after max_attempts the run is lost with the reason. A run with a pending
    cancel ends cancelled. Past REPROLAB_MAX_FREE_RELEASES free releases, a shutdown is charged
    like an infrastructure release."""
    if reason not in RELEASE_REASONS:
        raise ValidationError({"reason": f"reason must be one of {', '.join(RELEASE_REASONS)}."})
    detail = detail.strip()[:2000]
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        why = RELEASE_REASONS[reason] + (f" ({detail})" if detail else "")
        if reason == RELEASE_SHUTDOWN and run.free_releases >= settings.REPROLAB_MAX_FREE_RELEASES:
            reason = RELEASE_INFRASTRUCTURE
            why += f"; charged as an attempt after {run.free_releases} free releases"
        elif reason == RELEASE_SHUTDOWN:
            run.free_releases += 1
        if run.cancel_requested:
            _finish(run, RunState.CANCELLED, f"Cancelled; {why}.")
        elif reason == RELEASE_INFRASTRUCTURE and run.attempt >= run.max_attempts:
            _finish(run, RunState.LOST, f"Gave up after {run.attempt} attempts; on the last, {why}.")
        else:
            node = run.node.name if run.node else "?"
            _requeue(
                run,
                now=timezone.now(),
                reason=f"released by {node}: {why}",
                free=reason == RELEASE_SHUTDOWN,
                released=reason,
                detail=detail,
            )
    return run
