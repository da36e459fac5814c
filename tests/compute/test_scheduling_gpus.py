"""Unit tests of the scheduler's GPU slots, isolation and network (no database, no Django): a node
never gives out more GPUs than it has unless it shares them, each GPU a run gets has the memory it
asked for, and a run only goes to a node with the isolation and network it needs."""

from __future__ import annotations

import pytest

from apps.compute.scheduling import FairShare, LoadBalanced, NodeSlot, QueuedRun, can_run

BOTH = [LoadBalanced(), FairShare()]
both = pytest.mark.parametrize("strategy", BOTH, ids=lambda s: s.name)


def run(
    run_id: int,
    *,
    gpus: int = 0,
    gpu: bool = False,
    mem: int = 0,
    priority: int = 0,
    owner: int = 1,
    isolation: str | None = None,
    network: bool = False,
) -> QueuedRun:
    return QueuedRun(
        id=run_id,
        owner_id=owner,
        priority=priority,
        queued_at=float(run_id),
        needs_gpu=gpu,
        min_gpu_memory_mb=mem,
        gpus=gpus,
        isolation=isolation,
        network=network,
    )


def node(
    node_id: int,
    *,
    cap: int = 8,
    running: int = 0,
    gpus: tuple[int, ...] = (),
    in_use: int = 0,
    sharing: bool = False,
    isolation: str = "none",
    network: bool = False,
) -> NodeSlot:
    return NodeSlot(
        id=node_id,
        tags=frozenset(),
        max_concurrency=cap,
        running=running,
        gpu_memory_mb=gpus,
        gpus_in_use=in_use,
        gpu_sharing=sharing,
        isolation=isolation,
        network=network,
    )


def placed(strategy, runs, nodes) -> dict[int, int]:
    return {a.run_id: a.node_id for a in strategy.assign(runs, nodes)}


# --- what a run asks for ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("queued", "wanted"),
    [
        (run(1), 0),
        (run(1, gpu=True), 1),
        (run(1, mem=8_000), 1),  # GPU memory implies a GPU
        (run(1, gpus=3), 3),
        (run(1, gpus=3, gpu=True, mem=8_000), 3),
    ],
)
def test_gpus_wanted(queued, wanted):
    assert queued.gpus_wanted == wanted


# --- can_run: capability ----------------------------------------------------------------------------------
def test_every_gpu_a_run_gets_must_have_the_memory():
    mixed = node(1, gpus=(80_000, 16_000))
    assert can_run(run(1, gpus=2, mem=16_000), mixed)
    assert not can_run(run(1, gpus=2, mem=40_000), mixed)  # only one GPU has 40 GB
    assert can_run(run(1, gpus=1, mem=40_000), mixed)
    assert not can_run(run(1, gpus=3), mixed)
    assert not can_run(run(1, gpu=True), node(2))


def test_sharing_does_not_make_a_node_capable_of_more_gpus_than_it_has():
    assert not can_run(run(1, gpus=2), node(1, gpus=(80_000,), sharing=True))


@pytest.mark.parametrize(
    ("required", "capable"),
    [
        (None, {"none", "uid", "bwrap"}),
        ("none", {"none", "uid", "bwrap"}),
        ("limits", {"uid", "bwrap"}),
        ("sandbox", {"bwrap"}),
        ("vm", set()),  # a level this site does not know: no node is trusted with it
    ],
)
def test_a_run_needs_at_least_the_isolation_it_asks_for(required, capable):
    for level in ("none", "uid", "bwrap"):
        assert can_run(run(1, isolation=required), node(1, isolation=level)) == (level in capable), level


def test_an_unknown_node_isolation_counts_as_none():
    assert can_run(run(1, isolation="none"), node(1, isolation="chroot"))
    assert not can_run(run(1, isolation="limits"), node(1, isolation="chroot"))


def test_a_run_that_needs_the_network_only_goes_to_a_node_that_allows_it():
    assert not can_run(run(1, network=True), node(1, network=False))
    assert can_run(run(1, network=True), node(1, network=True))
    assert can_run(run(1), node(1, network=True))  # a node that allows it takes others too


# --- GPU slots: capacity -----------------------------------------------------------------------------------
@both
def test_a_one_gpu_node_takes_one_gpu_run_at_a_time(strategy):
    runs = [run(1, gpu=True), run(2, gpu=True), run(3, gpus=1), run(4)]
    assert placed(strategy, runs, [node(1, gpus=(80_000,))]) == {1: 1, 4: 1}


@both
def test_gpus_held_by_runs_already_on_the_node_count(strategy):
    nodes = [node(1, gpus=(80_000, 80_000), in_use=2)]
    assert placed(strategy, [run(1, gpu=True), run(2)], nodes) == {2: 1}
    nodes = [node(1, gpus=(80_000, 80_000), in_use=1)]
    assert placed(strategy, [run(1, gpu=True), run(2, gpu=True)], nodes) == {1: 1}


@both
def test_a_multi_gpu_run_that_cannot_get_its_gpus_now_does_not_block_smaller_ones(strategy):
    nodes = [node(1, gpus=(24_000,) * 4, in_use=3)]
    runs = [run(1, gpus=2, priority=9), run(2, gpus=1)]
    assert placed(strategy, runs, nodes) == {2: 1}


@both
def test_gpus_given_in_one_call_add_up(strategy):
    runs = [run(1, gpus=2), run(2, gpus=2), run(3, gpus=1), run(4, gpus=1)]
    assigned = placed(strategy, runs, [node(1, gpus=(24_000,) * 5)])
    assert sum(runs[r - 1].gpus_wanted for r in assigned) <= 5
    assert set(assigned) == {1, 2, 3}


@both
def test_a_sharing_node_gives_its_gpus_to_several_runs(strategy):
    runs = [run(1, gpu=True), run(2, gpu=True), run(3, gpu=True)]
    assert placed(strategy, runs, [node(1, cap=3, gpus=(80_000,), in_use=1, sharing=True)]) == {1: 1, 2: 1, 3: 1}


@both
def test_a_sharing_node_still_holds_its_run_slots(strategy):
    runs = [run(1, gpu=True), run(2, gpu=True)]
    assert placed(strategy, runs, [node(1, cap=1, gpus=(80_000,), sharing=True)]) == {1: 1}


@both
def test_the_gpus_in_use_are_taken_to_be_the_largest(strategy):
    """The site does not know which GPUs a node's runs hold: a run placed next to them must find
    its GPUs free whichever they are."""
    nodes = [node(1, gpus=(80_000, 16_000), in_use=1)]
    assert placed(strategy, [run(1, mem=40_000)], nodes) == {}
    assert placed(strategy, [run(1, mem=8_000)], nodes) == {1: 1}


@both
def test_gpu_runs_spread_over_nodes_with_free_gpus(strategy):
    nodes = [node(1, gpus=(80_000,)), node(2, gpus=(80_000,))]
    assert sorted(placed(strategy, [run(1, gpu=True), run(2, gpu=True), run(3, gpu=True)], nodes).items()) == [
        (1, 1),
        (2, 2),
    ]


@both
def test_a_node_that_lost_gpus_its_runs_still_hold_gives_none(strategy):
    assert placed(strategy, [run(1, gpu=True)], [node(1, gpus=(80_000,), in_use=3)]) == {}


@both
def test_isolation_and_network_pick_the_node(strategy):
    nodes = [node(1), node(2, isolation="bwrap"), node(3, isolation="uid", network=True)]
    runs = [run(1, isolation="sandbox"), run(2, network=True), run(3, isolation="limits", network=True)]
    assert placed(strategy, runs, nodes) == {1: 2, 2: 3, 3: 3}
