"""Unit tests for the pure scheduling policies (no database, no Django)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from apps.compute.scheduling import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    Assignment,
    FairShare,
    LoadBalanced,
    NodeSlot,
    QueuedRun,
    can_run,
    get_strategy,
)


def run(
    run_id: int,
    *,
    owner: int = 1,
    priority: int = 0,
    at: float | None = None,
    tags: frozenset[str] = frozenset(),
    gpu: bool = False,
    mem: int = 0,
    allowed: frozenset[int] | None = None,
) -> QueuedRun:
    return QueuedRun(
        id=run_id,
        owner_id=owner,
        priority=priority,
        queued_at=float(run_id) if at is None else at,
        required_tags=tags,
        needs_gpu=gpu,
        min_gpu_memory_mb=mem,
        allowed_node_ids=allowed,
    )


def node(
    node_id: int,
    *,
    cap: int = 1,
    running: int = 0,
    tags: frozenset[str] = frozenset(),
    gpus: int = 0,
    mem: int = 0,
) -> NodeSlot:
    """A node with `gpus` GPUs of `mem` MiB each."""
    return NodeSlot(id=node_id, tags=tags, max_concurrency=cap, running=running, gpu_memory_mb=(mem,) * gpus)


def run_ids(assignments: list[Assignment]) -> list[int]:
    return [a.run_id for a in assignments]


BOTH = [LoadBalanced(), FairShare()]
both = pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.name)


# --- can_run ---------------------------------------------------------------------------------------------------------


def test_can_run_tags_must_be_subset():
    n = node(1, tags=frozenset({"cpu", "large"}))
    assert can_run(run(1), n)
    assert can_run(run(1, tags=frozenset({"cpu"})), n)
    assert can_run(run(1, tags=frozenset({"cpu", "large"})), n)
    assert not can_run(run(1, tags=frozenset({"cpu", "arm"})), n)


def test_can_run_gpu_requirements():
    cpu = node(1)
    small = node(2, gpus=1, mem=8_000)
    big = node(3, gpus=2, mem=80_000)
    assert not can_run(run(1, gpu=True), cpu)
    assert can_run(run(1, gpu=True), small)
    assert can_run(run(1, gpu=True, mem=8_000), small)
    assert not can_run(run(1, gpu=True, mem=16_000), small)
    assert can_run(run(1, gpu=True, mem=16_000), big)
    # A run that does not need a GPU may still use a GPU node.
    assert can_run(run(1), big)


def test_can_run_min_gpu_memory_implies_gpu():
    # Memory reported without any GPU (bad inventory) must not satisfy a GPU-memory request.
    gpu_less = node(1, gpus=0, mem=32_000)
    assert not can_run(run(1, mem=1_000), gpu_less)
    assert can_run(run(1, mem=1_000), node(2, gpus=1, mem=32_000))


def test_can_run_allowed_nodes():
    assert can_run(run(1, allowed=None), node(7))
    assert can_run(run(1, allowed=frozenset({7, 8})), node(7))
    assert not can_run(run(1, allowed=frozenset({8})), node(7))
    assert not can_run(run(1, allowed=frozenset()), node(7))


# --- ordering -------------------------------------------------------------------------------------------------------


@both
def test_priority_order(strategy):
    runs = [run(1, priority=0), run(2, priority=5), run(3, priority=1)]
    assignments = strategy.assign(runs, [node(1, cap=2)])
    assert run_ids(assignments) == [2, 3]


@both
def test_fifo_among_equal_priority(strategy):
    runs = [run(1, at=300.0), run(2, at=100.0), run(3, at=200.0)]
    assignments = strategy.assign(runs, [node(1, cap=2)])
    assert run_ids(assignments) == [2, 3]


@both
def test_equal_priority_and_time_breaks_ties_by_id(strategy):
    runs = [run(9, at=1.0), run(4, at=1.0)]
    assert run_ids(strategy.assign(runs, [node(1)])) == [4]


@both
def test_input_order_does_not_matter(strategy):
    rng = random.Random(7)
    runs = [run(i, owner=i % 3, priority=i % 4, at=float(i * 7 % 11)) for i in range(1, 20)]
    nodes = [node(i, cap=2, running=i % 2) for i in range(1, 6)]
    expected = strategy.assign(runs, nodes)
    for _ in range(5):
        shuffled_runs, shuffled_nodes = runs[:], nodes[:]
        rng.shuffle(shuffled_runs)
        rng.shuffle(shuffled_nodes)
        assert strategy.assign(shuffled_runs, shuffled_nodes) == expected


# --- capability matching --------------------------------------------------------------------------------------------


@both
def test_runs_go_only_to_capable_nodes(strategy):
    nodes = [
        node(1, cap=5, tags=frozenset({"cpu"})),
        node(2, cap=5, tags=frozenset({"cpu", "gpu"}), gpus=1, mem=16_000),
        node(3, cap=5, tags=frozenset({"cpu", "gpu"}), gpus=4, mem=80_000),
        node(4, cap=5, tags=frozenset({"cpu"})),
    ]
    runs = [
        run(1, tags=frozenset({"gpu"})),
        run(2, gpu=True, mem=40_000),
        run(3, gpu=True),
        run(4, allowed=frozenset({4})),
        run(5, tags=frozenset({"tpu"})),
    ]
    placed = {a.run_id: a.node_id for a in strategy.assign(runs, nodes)}
    assert placed[1] in {2, 3}
    assert placed[2] == 3
    assert placed[3] in {2, 3}
    assert placed[4] == 4
    assert 5 not in placed


# --- load balancing and capacity ------------------------------------------------------------------------------------


@both
def test_least_loaded_node_chosen(strategy):
    nodes = [node(1, cap=4, running=3), node(2, cap=4, running=1), node(3, cap=4, running=2)]
    assert strategy.assign([run(1)], nodes) == [Assignment(run_id=1, node_id=2)]


@both
def test_load_is_a_ratio_not_a_count(strategy):
    # Node 1 runs fewer, but is 2/2 = full-ish relative to its size; node 2 at 3/10 is less loaded.
    nodes = [node(1, cap=3, running=2), node(2, cap=10, running=3)]
    assert strategy.assign([run(1)], nodes) == [Assignment(run_id=1, node_id=2)]


@both
def test_load_ties_broken_by_fewer_running_then_lowest_id(strategy):
    # Both at ratio 1/2; node 5 runs 1 of 2, node 3 runs 2 of 4 -> fewer running wins.
    nodes = [node(3, cap=4, running=2), node(5, cap=2, running=1)]
    assert strategy.assign([run(1)], nodes) == [Assignment(run_id=1, node_id=5)]
    # Identical load -> lowest id, regardless of input order.
    nodes = [node(9, cap=2), node(4, cap=2)]
    assert strategy.assign([run(1)], nodes) == [Assignment(run_id=1, node_id=4)]


@both
def test_assignments_in_one_call_count_as_load(strategy):
    nodes = [node(1, cap=2), node(2, cap=2)]
    assignments = strategy.assign([run(i) for i in range(1, 5)], nodes)
    assert [a.node_id for a in assignments] == [1, 2, 1, 2]


@both
def test_never_above_max_concurrency(strategy):
    nodes = [node(1, cap=3, running=1), node(2, cap=2, running=2), node(3, cap=1, running=5), node(4, cap=0)]
    runs = [run(i, owner=i % 4) for i in range(1, 51)]
    assignments = strategy.assign(runs, nodes)
    per_node = Counter(a.node_id for a in assignments)
    assert per_node == {1: 2}
    assert len(assignments) == 2


@both
def test_fills_all_capacity_when_enough_runs(strategy):
    nodes = [node(1, cap=3), node(2, cap=5, running=1), node(3, cap=2)]
    assignments = strategy.assign([run(i, owner=i % 3) for i in range(1, 101)], nodes)
    assert Counter(a.node_id for a in assignments) == {1: 3, 2: 4, 3: 2}


@both
def test_unplaceable_run_does_not_block_later_runs(strategy):
    runs = [run(1, priority=10, gpu=True), run(2, priority=10, tags=frozenset({"arm"})), run(3, priority=0)]
    assert strategy.assign(runs, [node(1)]) == [Assignment(run_id=3, node_id=1)]


@both
def test_busy_gpu_does_not_block_cpu_work(strategy):
    nodes = [node(1, cap=1, running=1, gpus=1, mem=16_000), node(2, cap=1)]
    runs = [run(1, priority=5, gpu=True), run(2)]
    assert strategy.assign(runs, nodes) == [Assignment(run_id=2, node_id=2)]


@both
def test_empty_inputs(strategy):
    assert strategy.assign([], []) == []
    assert strategy.assign([], [node(1)]) == []
    assert strategy.assign([run(1)], []) == []
    assert strategy.assign([], [], {}) == []


@both
def test_duplicate_run_ids_assigned_once(strategy):
    assignments = strategy.assign([run(1), run(1)], [node(1, cap=5)])
    assert run_ids(assignments) == [1]


@both
def test_inputs_not_mutated(strategy):
    runs = [run(1), run(2, owner=2)]
    nodes = [node(1, cap=1)]
    running = {1: 3}
    strategy.assign(runs, nodes, running)
    assert runs == [run(1), run(2, owner=2)]
    assert nodes == [node(1, cap=1)]
    assert running == {1: 3}


def test_load_balanced_is_strict_priority_across_owners():
    runs = [run(i, owner=1, priority=5) for i in range(1, 11)] + [run(99, owner=2, priority=0, at=0.0)]
    assignments = LoadBalanced().assign(runs, [node(1, cap=3)])
    assert run_ids(assignments) == [1, 2, 3]


# --- fair share -----------------------------------------------------------------------------------------------------


def test_fair_share_late_single_run_not_starved():
    runs = [run(i, owner=1, at=float(i)) for i in range(1, 11)] + [run(11, owner=2, at=100.0)]
    assignments = FairShare().assign(runs, [node(1, cap=2)])
    assert run_ids(assignments) == [1, 11]


def test_fair_share_alternates_owners():
    runs = [run(i, owner=1, at=float(i)) for i in range(1, 11)] + [
        run(100 + i, owner=2, at=50.0 + i) for i in range(1, 4)
    ]
    assignments = FairShare().assign(runs, [node(1, cap=8)])
    assert run_ids(assignments) == [1, 101, 2, 102, 3, 103, 4, 5]


def test_fair_share_priority_orders_within_owner_not_across():
    runs = [
        run(1, owner=1, priority=100, at=1.0),
        run(2, owner=1, priority=100, at=2.0),
        run(3, owner=2, priority=0, at=3.0),
        run(4, owner=2, priority=9, at=4.0),
    ]
    assignments = FairShare().assign(runs, [node(1, cap=2)])
    # Owner 1's head is older so it goes first; then owner 2's *highest-priority* run, not its oldest.
    assert run_ids(assignments) == [1, 4]


def test_fair_share_running_by_owner_skew_serves_less_served_first():
    runs = [run(1, owner=1, at=1.0), run(2, owner=1, at=2.0), run(3, owner=2, at=50.0), run(4, owner=2, at=60.0)]
    # Owner 1 already has 3 running elsewhere; owner 2 has none.
    assignments = FairShare().assign(runs, [node(1, cap=3)], running_by_owner={1: 3})
    assert run_ids(assignments) == [3, 4, 1]


def test_fair_share_unknown_owner_in_running_by_owner_is_harmless():
    assignments = FairShare().assign([run(1, owner=1)], [node(1)], running_by_owner={42: 10})
    assert run_ids(assignments) == [1]


def test_fair_share_owner_with_only_unplaceable_runs_does_not_block_others():
    runs = [run(1, owner=1, at=0.0, gpu=True), run(2, owner=2, at=5.0), run(3, owner=2, at=6.0)]
    assignments = FairShare().assign(runs, [node(1, cap=2)])
    assert run_ids(assignments) == [2, 3]


def test_fair_share_skips_unplaceable_head_within_owner():
    runs = [run(1, owner=1, priority=9, gpu=True), run(2, owner=1, priority=0)]
    assert FairShare().assign(runs, [node(1)]) == [Assignment(run_id=2, node_id=1)]


# --- registry -------------------------------------------------------------------------------------------------------


def test_registry_and_default():
    assert set(STRATEGIES) == {"load_balanced", "fair_share"}
    assert DEFAULT_STRATEGY == "load_balanced"
    assert isinstance(get_strategy("load_balanced"), LoadBalanced)
    assert isinstance(get_strategy("fair_share"), FairShare)
    for name, strategy in STRATEGIES.items():
        assert strategy.name == name


def test_get_strategy_unknown_name():
    with pytest.raises(ValueError, match="round_robin") as excinfo:
        get_strategy("round_robin")
    assert "fair_share" in str(excinfo.value)
    assert "load_balanced" in str(excinfo.value)


# --- property-style invariants --------------------------------------------------------------------------------------

TAG_POOL = ["cpu", "gpu", "large", "arm", "secure"]


def random_case(rng: random.Random) -> tuple[list[QueuedRun], list[NodeSlot], dict[int, int]]:
    nodes = []
    for node_id in rng.sample(range(1, 50), rng.randint(0, 6)):
        gpus = rng.choice([0, 0, 1, 2, 8])
        nodes.append(
            NodeSlot(
                id=node_id,
                tags=frozenset(rng.sample(TAG_POOL, rng.randint(0, len(TAG_POOL)))),
                max_concurrency=rng.randint(0, 4),
                running=rng.randint(0, 5),
                gpu_memory_mb=tuple(rng.choice([0, 8_000, 24_000, 80_000]) for _ in range(gpus)),
                gpus_in_use=rng.randint(0, gpus),
                gpu_sharing=rng.random() < 0.2,
                isolation=rng.choice(["none", "uid", "bwrap"]),
                network=rng.random() < 0.5,
            )
        )
    node_ids = [n.id for n in nodes] or [1]
    runs = []
    for run_id in range(1, rng.randint(0, 30) + 1):
        runs.append(
            QueuedRun(
                id=run_id,
                owner_id=rng.randint(1, 4),
                priority=rng.randint(-2, 3),
                queued_at=float(rng.randint(0, 20)),
                required_tags=frozenset(rng.sample(TAG_POOL, rng.randint(0, 2))),
                needs_gpu=rng.random() < 0.3,
                min_gpu_memory_mb=rng.choice([0, 0, 0, 8_000, 40_000]),
                gpus=rng.choice([0, 0, 0, 1, 2, 4]),
                isolation=rng.choice([None, None, "none", "limits", "sandbox"]),
                network=rng.random() < 0.2,
                allowed_node_ids=(
                    None if rng.random() < 0.7 else frozenset(rng.sample(node_ids, rng.randint(0, len(node_ids))))
                ),
            )
        )
    running_by_owner = {owner: rng.randint(0, 5) for owner in range(1, 5) if rng.random() < 0.5}
    return runs, nodes, running_by_owner


def gpus_free(run: QueuedRun, node: NodeSlot, in_use: int) -> bool:
    """Whether the node has the run's GPUs free, the largest ones counted as the ones in use."""
    if node.gpu_sharing or run.gpus_wanted == 0:
        return True
    free = sorted(node.gpu_memory_mb)[: max(0, node.gpu_count - in_use)]
    return sum(1 for memory in free if memory >= run.min_gpu_memory_mb) >= run.gpus_wanted


@both
def test_random_inputs_respect_invariants(strategy):
    rng = random.Random(20240611)
    for _ in range(200):
        runs, nodes, running_by_owner = random_case(rng)
        assignments = strategy.assign(runs, nodes, running_by_owner)
        runs_by_id = {r.id: r for r in runs}
        nodes_by_id = {n.id: n for n in nodes}

        assigned = run_ids(assignments)
        assigned_set = set(assigned)
        assert len(assigned) == len(assigned_set), "a run was assigned twice"

        per_node = Counter(a.node_id for a in assignments)
        for node_id, count in per_node.items():
            n = nodes_by_id[node_id]
            assert count <= max(0, n.max_concurrency - n.running), f"node {node_id} over capacity"

        gpus_given: Counter[int] = Counter()
        for a in assignments:
            assert can_run(runs_by_id[a.run_id], nodes_by_id[a.node_id])
            gpus_given[a.node_id] += runs_by_id[a.run_id].gpus_wanted
        for node_id, given in gpus_given.items():
            n = nodes_by_id[node_id]
            assert n.gpu_sharing or given == 0 or n.gpus_in_use + given <= n.gpu_count, f"node {node_id} GPUs"

        # Work-conserving: every unassigned run fits nowhere that still has room.
        left = {n.id: n.max_concurrency - n.running - per_node[n.id] for n in nodes}
        for r in runs:
            if r.id not in assigned_set:
                assert not any(
                    left[n.id] > 0 and can_run(r, n) and gpus_free(r, n, n.gpus_in_use + gpus_given[n.id])
                    for n in nodes
                )

        # Deterministic.
        assert strategy.assign(runs, nodes, running_by_owner) == assignments
