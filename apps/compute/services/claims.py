"""Claiming work: a node asks for a run, the scheduler plans the queue over every active node,
and the node leases the run planned for it (apps/compute/scheduling.py is the policy; this module
snapshots the database into its plain data and applies its answer)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone
from reprolab_agent import protocol

from apps.core.secrets import new_secret

from .. import scheduling, trust
from ..models import ACTIVE_STATES, Node, Run, RunState, new_lease_id
from ..requirements import read_requirements
from .events import append_state_event
from .leases import RUN_TOKEN_PREFIX, expire_leases, lease_deadline


@dataclass(frozen=True)
class Claim:
    run: Run
    lease_id: str
    lease_expires_at: dt.datetime
    run_token: str
    heartbeat_seconds: int


# Concurrent claimers that saw the queue at different moments can plan the same run; the loser
# plans again with the winner's lease in view. Each try is cheap beside a long poll's wait.
CLAIM_TRIES = 10


def run_claim(*, node: Node, limit: int = 200) -> Claim | None:
    """Lease the run the scheduler assigns to this node, if any. Safe under concurrent agents:
    claims for one node take turns (a lock on the node's row, so max_concurrency and its GPUs
    hold), claims for different nodes plan side by side from the same queue (the plan is
    deterministic, so they pick different runs); the chosen run is locked with SKIP LOCKED where
    the database has it, and the lease is taken by compare-and-set on state=queued."""
    expire_leases()
    strategy = scheduling.get_strategy(settings.REPROLAB_SCHEDULER)
    for _ in range(CLAIM_TRIES):  # another agent may win the compare-and-set; then look again
        with transaction.atomic():
            _take_turns(node)
            # Candidates are read without row locks: locking them all would hide the whole queue
            # from every other node's claim until this one commits.
            runs = list(
                _eligible_runs(node)
                .select_related("environment_lock")  # its Python, for the plan; not its texts
                .defer("environment_lock__lock", "environment_lock__packages")
                .order_by("-priority", "queued_at", "id")[:limit]
            )
            if not runs:
                return None
            planned = _planned_for(node, runs, strategy)
            if planned is None:
                return None
            claim = _lease(node, planned)
            if claim is not None:
                return claim
    return None


def _take_turns(node: Node) -> None:
    """Lock the node's row until the transaction ends: its claims run one at a time."""
    features = connection.features
    list(
        Node.objects.select_for_update(no_key=features.has_select_for_no_key_update)
        .filter(pk=node.pk)
        .values_list("pk", flat=True)
    )


def _eligible_runs(node: Node) -> Any:
    """Queued runs this node may take (see `trust`) whose dependencies all succeeded."""
    runs = Run.objects.filter(trust.runs_for_node(node), state=RunState.QUEUED, cancel_requested=False)
    unfinished_dependency = Run.objects.filter(dependents=OuterRef("pk")).exclude(state=RunState.SUCCEEDED)
    return runs.exclude(Exists(unfinished_dependency))


def _planned_for(node: Node, runs: Sequence[Run], strategy: scheduling.Strategy) -> int | None:
    """The id of the run the scheduler gives `node`, planning `runs` over every active node."""
    nodes = _active_nodes(node)
    facts = [trust.node_facts(n) for n in nodes]
    crews = trust.crews({r.project_id for r in runs}, {n.owner_id for n in nodes})
    queued = [_queued_run(r, trust.allowed_node_ids(trust.run_facts(r), facts, crews[r.project_id])) for r in runs]
    running_by_owner = dict(
        Run.objects.filter(state__in=ACTIVE_STATES).values_list("created_by_id").annotate(n=Count("id"))
    )
    assignments = strategy.assign(queued, _node_slots(nodes), running_by_owner)
    return next((a.run_id for a in assignments if a.node_id == node.pk), None)


def _active_nodes(claimer: Node) -> list[Node]:
    since = timezone.now() - dt.timedelta(seconds=settings.REPROLAB_NODE_ACTIVE_SECONDS)
    nodes = list(
        Node.objects.filter(revoked_at__isnull=True, last_seen_at__gte=since, owner__is_active=True)
        .exclude(pk=claimer.pk)
        .select_related("owner")
        .prefetch_related("projects")
    )
    return [claimer, *nodes]


def _queued_run(run: Run, allowed_node_ids: frozenset[int] | None) -> scheduling.QueuedRun:
    needs = read_requirements(run.requirements)
    return scheduling.QueuedRun(
        id=run.pk,
        owner_id=run.created_by_id or 0,
        priority=run.priority,
        queued_at=run.queued_at.timestamp(),
        required_tags=frozenset(needs.tags),
        needs_gpu=needs.gpus > 0,
        min_gpu_memory_mb=needs.min_gpu_memory_mb,
        allowed_node_ids=allowed_node_ids,
        gpus=needs.gpus,
        isolation=needs.isolation,
        network=needs.network,
        environment=run.environment_lock is not None,
        python_minimum=run.environment_lock.python_version if run.environment_lock else "",
        requires_python=run.environment_lock.requires_python if run.environment_lock else "",
        kind=run.kind,
    )


def _node_slots(nodes: Sequence[Node]) -> list[scheduling.NodeSlot]:
    """Each node's capabilities and load: the runs it holds and the GPUs they hold (a run's
    stored requirements say how many; rows from before `gpus` count `gpu: true` as one)."""
    held = Run.objects.filter(node__in=nodes, state__in=ACTIVE_STATES).values_list("node_id", "requirements")
    running: Counter[int] = Counter()
    gpus_in_use: Counter[int] = Counter()
    for node_id, requirements in held:
        running[node_id] += 1
        gpus_in_use[node_id] += read_requirements(requirements).gpus
    return [_node_slot(n, running=running[n.pk], gpus_in_use=gpus_in_use[n.pk]) for n in nodes]


def _node_slot(node: Node, *, running: int, gpus_in_use: int) -> scheduling.NodeSlot:
    """A node as the scheduler sees it. Its capabilities are what its agent reported, stored as
    sent by whichever agent version it runs: anything odd counts as absent (no GPU, no network,
    no sharing, no isolation), so one node's data can never stop the scheduler."""
    capabilities = node.capabilities if isinstance(node.capabilities, dict) else {}
    isolation = capabilities.get(protocol.CAP_ISOLATION)
    return scheduling.NodeSlot(
        id=node.pk,
        tags=frozenset(t for t in node.tags if isinstance(t, str)) if isinstance(node.tags, list) else frozenset(),
        max_concurrency=node.max_concurrency,
        running=running,
        gpu_memory_mb=tuple(
            _stored_mb(gpu.get("memory_total_mb") or gpu.get("memory_mb")) for gpu in node.gpus if isinstance(gpu, dict)
        ),
        gpus_in_use=gpus_in_use,
        gpu_sharing=capabilities.get(protocol.CAP_GPU_SHARING) is True,
        isolation=isolation if isolation in protocol.ISOLATION_LEVELS else protocol.ISOLATION_NONE,
        network=capabilities.get(protocol.CAP_NETWORK) is True,
        environments=capabilities.get(protocol.CAP_ENVIRONMENTS) is True,
        python_version=str(capabilities.get(protocol.CAP_PYTHON) or "")[:40],
        run_kinds=_run_kinds(capabilities.get(protocol.CAP_RUN_KINDS)),
    )


def _run_kinds(reported: Any) -> frozenset[str]:
    """The run kinds a node's agent said it runs; notebook runs only for anything odd or absent."""
    if not isinstance(reported, list):
        return frozenset({protocol.KIND_NOTEBOOK})
    return frozenset(kind for kind in reported if kind in protocol.RUN_KINDS) | {protocol.KIND_NOTEBOOK}


def _stored_mb(value: Any) -> int:
    """A GPU memory figure from a node's stored capabilities; anything odd counts as none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if 0 <= value < 2**31 else 0


def _lease(node: Node, run_id: int) -> Claim | None:
    """Lease the run to `node` by compare-and-set on state=queued; None when another claim is
    taking it (plan again)."""
    if connection.features.has_select_for_update_skip_locked and not list(
        Run.objects.select_for_update(skip_locked=True)
        .filter(pk=run_id, state=RunState.QUEUED)
        .values_list("pk", flat=True)
    ):
        return None
    lease_id = new_lease_id()
    token = new_secret(RUN_TOKEN_PREFIX)
    expires = lease_deadline()
    taken = Run.objects.filter(pk=run_id, state=RunState.QUEUED).update(
        state=RunState.LEASED,
        node=node,
        lease_id=lease_id,
        lease_expires_at=expires,
        run_token_hash=token.hash,
    )
    if not taken:
        return None
    run = Run.objects.select_related("notebook_version__notebook", "project", "environment_lock").get(pk=run_id)
    append_state_event(run, RunState.LEASED, node=node.name, attempt=run.attempt)
    return Claim(
        run=run,
        lease_id=str(lease_id),
        lease_expires_at=expires,
        run_token=token.raw,
        heartbeat_seconds=settings.REPROLAB_HEARTBEAT_SECONDS,
    )
