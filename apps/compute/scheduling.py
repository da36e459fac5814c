"""Pure scheduling policies: which queued run goes to which compute node.

This module is deliberately free of Django and of any I/O.  The caller (a
dispatcher task, a view, a benchmark) snapshots the queue and the nodes into
the small frozen dataclasses below, asks a :class:`Strategy` for assignments
and then applies them transactionally itself.  Keeping the policy as plain data
in, plain data out makes it cheap to unit-test exhaustively, trivially
deterministic (the same snapshot always yields the same plan, so retries and
races are reasoned about easily) and swappable by name through
:data:`STRATEGIES`.

Invariants every strategy upholds:

* each run is assigned at most once per call;
* every assignment satisfies :func:`can_run`;
* no node ends up with more than ``max_concurrency`` runs, counting both the
  runs it already has (``NodeSlot.running``) and those assigned in this call;
* no node gives out more GPUs than it has, counting those its runs already
  hold (``NodeSlot.gpus_in_use``) and those assigned in this call, unless it
  lets runs share GPUs (``NodeSlot.gpu_sharing``);
* a run that fits nowhere is skipped rather than blocking later runs with
  different requirements (no head-of-line blocking).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from reprolab_agent.protocol import ISOLATION_NONE, KIND_NOTEBOOK, isolation_satisfies, python_misfit

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Assignment",
    "FairShare",
    "LoadBalanced",
    "NodeSlot",
    "QueuedRun",
    "Strategy",
    "can_run",
    "get_strategy",
]


@dataclass(frozen=True)
class QueuedRun:
    """A snapshot of one run waiting in the queue.

    Frozen so a strategy can never mutate the caller's view of the queue.
    """

    id: int
    owner_id: int  # the user who submitted it
    priority: int  # higher first
    queued_at: float  # epoch seconds; earlier first among equal priority
    required_tags: frozenset[str] = frozenset()
    needs_gpu: bool = False
    min_gpu_memory_mb: int = 0  # of each GPU it gets
    allowed_node_ids: frozenset[int] | None = None  # None: any node; else only these may take it
    gpus: int = 0  # whole GPUs it gets for itself
    isolation: str | None = None  # a key of protocol.REQUIRED_ISOLATION; None: any node
    network: bool = False  # it needs the network: only nodes whose owner allows it
    # A declared environment: only nodes that build environments, on a Python it allows.
    environment: bool = False
    python_minimum: str = ""
    requires_python: str = ""
    kind: str = KIND_NOTEBOOK  # protocol.RUN_KINDS: only nodes whose agent runs that kind

    @property
    def gpus_wanted(self) -> int:
        """How many GPUs it takes: asking for a GPU, or for GPU memory, means one at least."""
        return max(self.gpus, 1 if self.needs_gpu or self.min_gpu_memory_mb > 0 else 0)


@dataclass(frozen=True)
class NodeSlot:
    """A snapshot of one compute node's capabilities and current load."""

    id: int
    tags: frozenset[str]
    max_concurrency: int
    running: int  # runs currently leased/running on it
    gpu_memory_mb: tuple[int, ...] = ()  # each GPU's memory, one entry per GPU
    gpus_in_use: int = 0  # GPUs its leased/running runs hold
    gpu_sharing: bool = False  # runs may share its GPUs: GPUs are not counted out
    isolation: str = ISOLATION_NONE  # one of protocol.ISOLATION_LEVELS
    network: bool = False  # its owner lets runs that ask for it reach the network
    environments: bool = False  # its agent builds declared environments
    python_version: str = ""  # the Python it builds them on
    run_kinds: frozenset[str] = frozenset({KIND_NOTEBOOK})  # what its agent runs (older agents: notebooks)

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_memory_mb)


@dataclass(frozen=True)
class Assignment:
    """The decision to start run ``run_id`` on node ``node_id``."""

    run_id: int
    node_id: int


class Strategy(Protocol):
    """A scheduling policy, looked up by :attr:`name` in :data:`STRATEGIES`.

    A protocol rather than a base class so tests and benchmarks can pass any
    object with the right shape.
    """

    name: str

    def assign(
        self,
        runs: Sequence[QueuedRun],
        nodes: Sequence[NodeSlot],
        running_by_owner: Mapping[int, int] | None = None,
    ) -> list[Assignment]:
        """Return assignments for as many of ``runs`` as ``nodes`` can take now."""
        ...


def can_run(run: QueuedRun, node: NodeSlot) -> bool:
    """Whether ``node`` is *capable* of executing ``run`` (ignoring its current load).

    Capability and capacity are kept separate so callers can also use this to
    explain why a run is stuck ("no node has tag X") versus merely waiting for
    a free slot.  Asking for GPU memory implies asking for a GPU: a run that
    sets ``min_gpu_memory_mb`` without ``needs_gpu`` should not land on a CPU
    node just because the flag was forgotten.  The node needs ``gpus_wanted``
    GPUs with at least ``min_gpu_memory_mb`` each, at least the isolation the
    run asks for, the network when the run needs it, and for a run with a declared
    environment, an agent that builds environments on a Python the environment allows.
    """
    if not run.required_tags <= node.tags:
        return False
    if run.allowed_node_ids is not None and node.id not in run.allowed_node_ids:
        return False
    if not isolation_satisfies(node.isolation, run.isolation):
        return False
    if run.network and not node.network:
        return False
    if run.kind not in node.run_kinds:  # an agent that predates grading would run it as a notebook
        return False
    if run.environment and not (
        node.environments
        and python_misfit(node.python_version, minimum=run.python_minimum, requires_python=run.requires_python) is None
    ):
        return False
    return _fitting_gpus(node.gpu_memory_mb, run.min_gpu_memory_mb) >= run.gpus_wanted


def _fitting_gpus(memories: Sequence[int], min_memory_mb: int) -> int:
    return sum(1 for memory in memories if memory >= min_memory_mb)


def _gpus_free_for(run: QueuedRun, node: NodeSlot, in_use: int) -> bool:
    """Whether ``node`` can give ``run`` its GPUs now, with ``in_use`` of them held.

    The site does not know which GPUs a node's runs hold (the agent picks them),
    so it assumes the worst: the largest ones.  A run placed here then always
    finds the GPUs it needs free, whichever ones the other runs got.
    """
    wanted = run.gpus_wanted
    if wanted == 0 or node.gpu_sharing:
        return True
    free = sorted(node.gpu_memory_mb)[: max(0, node.gpu_count - in_use)]
    return _fitting_gpus(free, run.min_gpu_memory_mb) >= wanted


def _run_order(run: QueuedRun) -> tuple[int, float, int]:
    """Queue order: higher priority first, then oldest, then lowest id (total and stable)."""
    return (-run.priority, run.queued_at, run.id)


class _Placer:
    """Tracks node load within one ``assign`` call and picks the least-loaded capable node.

    Assignments made earlier in the same call count as load (run slots and GPUs), which
    is what keeps a single call from overfilling a node.
    """

    def __init__(self, nodes: Sequence[NodeSlot]) -> None:
        # Sorting by id up front makes the scan order, and therefore every tie, deterministic
        # regardless of the order the caller listed the nodes in.
        self._nodes = sorted(nodes, key=lambda n: n.id)
        self._load: dict[int, int] = {n.id: n.running for n in self._nodes}
        self._gpus_in_use: dict[int, int] = {n.id: n.gpus_in_use for n in self._nodes}

    def best_node(self, run: QueuedRun) -> NodeSlot | None:
        """The capable node with free capacity and the lowest load, or ``None``.

        Load is compared as the exact ratio ``running / max_concurrency`` (a
        ``Fraction``, so no float ties go astray), then fewer running, then the
        lowest id.  Nodes with ``max_concurrency <= 0`` never have room.
        """
        best: NodeSlot | None = None
        best_key: tuple[Fraction, int, int] | None = None
        for node in self._nodes:
            load = self._load[node.id]
            if node.max_concurrency <= 0 or load >= node.max_concurrency:
                continue
            if not can_run(run, node) or not _gpus_free_for(run, node, self._gpus_in_use[node.id]):
                continue
            key = (Fraction(load, node.max_concurrency), load, node.id)
            if best_key is None or key < best_key:
                best, best_key = node, key
        return best

    def place(self, run: QueuedRun) -> Assignment | None:
        """Assign ``run`` to its best node and record the extra load; ``None`` if it fits nowhere."""
        node = self.best_node(run)
        if node is None:
            return None
        self._load[node.id] += 1
        self._gpus_in_use[node.id] += run.gpus_wanted
        return Assignment(run_id=run.id, node_id=node.id)


def _unique_runs(runs: Sequence[QueuedRun]) -> list[QueuedRun]:
    """Drop repeated run ids (keeping the first) so a run is never assigned twice."""
    seen: set[int] = set()
    unique: list[QueuedRun] = []
    for run in runs:
        if run.id not in seen:
            seen.add(run.id)
            unique.append(run)
    return unique


class LoadBalanced:
    """Global priority order, each run to the least-loaded capable node (the default).

    Runs are taken in (priority desc, queued_at, id) order.  A run with no
    capable free node (a free run slot, and free GPUs when it wants any) is
    skipped, so a queue head waiting for a busy GPU does not hold back CPU work
    behind it.
    """

    name: str = "load_balanced"

    def assign(
        self,
        runs: Sequence[QueuedRun],
        nodes: Sequence[NodeSlot],
        running_by_owner: Mapping[int, int] | None = None,
    ) -> list[Assignment]:
        """Assign runs in queue order; ``running_by_owner`` is accepted for protocol parity and ignored."""
        placer = _Placer(nodes)
        assignments: list[Assignment] = []
        for run in sorted(_unique_runs(runs), key=_run_order):
            assignment = placer.place(run)
            if assignment is not None:
                assignments.append(assignment)
        return assignments


class FairShare:
    """Round-robin between users by how much each is already being served.

    Strict priority lets one user with a large batch monopolise every slot.
    Here the owner with the fewest runs running plus assigned in this call
    goes next (ties: the owner whose next run was queued earliest, then the
    lowest owner id), and that owner's best run is placed like
    :class:`LoadBalanced` would.  Priority therefore orders runs *within* one
    owner's queue, not across owners.
    """

    name: str = "fair_share"

    def assign(
        self,
        runs: Sequence[QueuedRun],
        nodes: Sequence[NodeSlot],
        running_by_owner: Mapping[int, int] | None = None,
    ) -> list[Assignment]:
        """Assign runs one at a time to the least-served owner that still has a placeable run."""
        placer = _Placer(nodes)
        served: dict[int, int] = dict(running_by_owner or {})
        # Each owner's queue in priority/age order; cursors index the next candidate.
        queues: dict[int, list[QueuedRun]] = {}
        for run in sorted(_unique_runs(runs), key=_run_order):
            queues.setdefault(run.owner_id, []).append(run)
        cursors: dict[int, int] = dict.fromkeys(queues, 0)
        assignments: list[Assignment] = []

        while True:
            chosen_owner: int | None = None
            chosen_key: tuple[int, float, int, int] | None = None
            for owner_id, queue in queues.items():
                # Skip runs that fit nowhere.  Load only grows within a call, so a run that does
                # not fit now never will, and discarding it keeps this owner from blocking on it.
                while cursors[owner_id] < len(queue) and placer.best_node(queue[cursors[owner_id]]) is None:
                    cursors[owner_id] += 1
                if cursors[owner_id] >= len(queue):
                    continue
                head = queue[cursors[owner_id]]
                key = (served.get(owner_id, 0), head.queued_at, head.id, owner_id)
                if chosen_key is None or key < chosen_key:
                    chosen_owner, chosen_key = owner_id, key
            if chosen_owner is None:
                return assignments
            run = queues[chosen_owner][cursors[chosen_owner]]
            cursors[chosen_owner] += 1
            assignment = placer.place(run)
            # best_node() just succeeded for this run and nothing changed since, so it must place.
            assert assignment is not None
            assignments.append(assignment)
            served[chosen_owner] = served.get(chosen_owner, 0) + 1


DEFAULT_STRATEGY = LoadBalanced.name

STRATEGIES: dict[str, Strategy] = {strategy.name: strategy for strategy in (LoadBalanced(), FairShare())}
"""Registry of available strategies by name, so settings and the API can refer to them as strings."""


def get_strategy(name: str) -> Strategy:
    """Look up a strategy by name, failing loudly on typos rather than silently using the default."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"Unknown scheduling strategy {name!r}; known strategies: {known}") from None
