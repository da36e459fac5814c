"""What a node's agent does under a lease: renew it, send events, complete or release the run;
and the reconciler that settles runs whose lease ran out.

Every state change is one transaction and a compare-and-set on (state, lease_id), so a stale
agent (an expired lease, a second claimer) changes nothing and is told so (StaleLease -> 409).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from reprolab_agent import protocol

from apps.core.secrets import hash_secret

from .. import trust
from ..models import ACTIVE_STATES, Node, Run, RunArtifact, RunEvent, RunKind, RunState
from ..queue_signal import announce_work
from .events import append_events, append_state_event
from .runs import finish

logger = logging.getLogger(__name__)

RUN_TOKEN_PREFIX = "rlr_"  # noqa: S105 - a prefix, not a secret

COMPLETION_STATES = frozenset(protocol.COMPLETION_STATES)

RELEASE_SHUTDOWN = protocol.RELEASE_SHUTDOWN
RELEASE_INFRASTRUCTURE = protocol.RELEASE_INFRASTRUCTURE
RELEASE_REASONS = {
    # The agent is stopping (SIGTERM): the run did nothing wrong and is charged no attempt.
    RELEASE_SHUTDOWN: "the node's agent stopped",
    # The node could not run it (the kernel did not start, uploads kept failing): retried like
    # a lost node, up to max_attempts.
    RELEASE_INFRASTRUCTURE: "the node could not run it",
}


class StaleLease(Exception):
    """The caller's lease is not the run's current one (expired, requeued or never held)."""


def lease_deadline() -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=settings.REPROLAB_LEASE_SECONDS)


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
        run.lease_expires_at = lease_deadline()
        fields = ["lease_expires_at"]
        # A busy node does not poll for work; its heartbeats show it is alive.
        if run.node_id is not None:
            Node.objects.filter(pk=run.node_id).update(last_seen_at=timezone.now())
        run.save(update_fields=fields)
        if running:
            _mark_running(run)
        return HeartbeatReply(lease_expires_at=run.lease_expires_at, cancel_requested=run.cancel_requested)


def _mark_running(run: Run) -> None:
    """Leased -> running, once: the agent said so on a heartbeat, or sent what only a running
    notebook sends (its events), or finished it (a notebook with nothing to report)."""
    if run.state != RunState.LEASED:
        return
    run.state = RunState.RUNNING
    run.started_at = timezone.now()
    run.save(update_fields=["state", "started_at"])
    append_state_event(run, RunState.RUNNING)


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
        if fresh:
            _mark_running(run)
        append_events(run, fresh)
        return len(fresh)


def run_complete(*, run: Run, lease_id: str, state: str, error: str = "", grading: dict[str, Any] | None = None) -> Run:
    """Settle the run as its node reports; `grading` is a grading run's report (kept only for
    runs of that kind)."""
    if state not in COMPLETION_STATES:
        raise ValidationError({"state": f"state must be one of {', '.join(sorted(COMPLETION_STATES))}."})
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        if state == RunState.SUCCEEDED and not run.pending_output:
            raise ValidationError({"state": "Upload the output notebook before completing as succeeded."})
        if state != RunState.CANCELLED:
            _mark_running(run)
        if run.pending_output:
            run.output_sha256 = run.pending_output["sha256"]
            run.output_size = run.pending_output["size"]
            run.output_storage_name = run.pending_output["storage_name"]
        if grading is not None and run.kind == RunKind.GRADING:
            run.grading_report = grading
        finish(run, RunState(state), error)
    return run


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
                finish(run, RunState.CANCELLED, "Cancelled; the node stopped answering.")
            elif run.attempt >= run.max_attempts:
                finish(run, RunState.LOST, f"The node stopped answering on all {run.attempt} attempts.")
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
    append_state_event(run, RunState.QUEUED, attempt=run.attempt, reason=reason, **payload)
    announce_work()


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
            finish(run, RunState.CANCELLED, f"Cancelled; {why}.")
        elif reason == RELEASE_INFRASTRUCTURE and run.attempt >= run.max_attempts:
            finish(run, RunState.LOST, f"Gave up after {run.attempt} attempts; on the last, {why}.")
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
