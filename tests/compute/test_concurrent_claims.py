"""Concurrent claims, each in a thread with its own database connection as concurrent requests
have: different nodes take different runs, one node's claims take turns (so its max_concurrency
and its GPUs hold), and a run locked by a claim in flight is skipped (SKIP LOCKED on PostgreSQL)."""

import threading

import pytest
from django.db import connection, transaction

from apps.compute import services
from apps.compute.models import Node, Run, RunState
from apps.projects.models import NotebookVersion, Project

from ..factories import make_project, upload_notebook
from .helpers import claim, node, submit


def in_threads(target, items) -> list[Exception]:
    """Run `target(item, barrier)` for each item in a thread of its own (so with a database
    connection of its own, as concurrent requests have), released together by the barrier."""
    barrier = threading.Barrier(len(items))
    errors: list[Exception] = []

    def body(item) -> None:
        try:
            barrier.wait(timeout=10)
            target(item)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a claim hung"
    return errors


@pytest.fixture
def race(owner) -> tuple[Project, NotebookVersion]:
    project = make_project(owner, slug="race")
    return project, upload_notebook(project, owner).version


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("count", [2, 6])
def test_concurrent_claims_for_different_nodes_take_different_runs(owner, race, count):
    runs = [submit(*race) for _ in range(count)]
    nodes = [node(owner, f"n{i}") for i in range(count)]
    results: dict[int, int] = {}
    missed: list[int] = []

    def take(n: Node) -> None:
        c = services.run_claim(node=n)
        if c is None:
            missed.append(n.pk)
        else:
            results[n.pk] = c.run.pk

    assert not in_threads(take, nodes)
    # Every node got a run at the first try: a claim in flight does not hide the queue from the others.
    assert missed == []
    assert sorted(results) == sorted(n.pk for n in nodes)
    assert sorted(results.values()) == sorted(r.pk for r in runs), "a run was handed out twice"
    leased = {(r.pk, r.node_id) for r in Run.objects.filter(state=RunState.LEASED)}
    assert leased == {(run_id, node_id) for node_id, run_id in results.items()}
    for run in runs:  # one lease each: no claim was applied twice
        assert run.events.filter(payload__state="leased").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_for_one_node_respect_its_max_concurrency(owner, race):
    runs = [submit(*race) for _ in range(4)]
    box = node(owner, max_concurrency=2)
    claimed: list[int] = []

    def take(_: int) -> None:
        c = services.run_claim(node=box)
        if c is not None:
            claimed.append(c.run.pk)

    assert not in_threads(take, range(6))
    assert len(claimed) == len(set(claimed)) == 2
    assert set(claimed) == {runs[0].pk, runs[1].pk}
    assert Run.objects.filter(node=box, state=RunState.LEASED).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_run_locked_by_a_claim_in_flight_does_not_hide_the_others(owner, race):
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("row locks (SKIP LOCKED) need PostgreSQL")
    first, second = submit(*race), submit(*race)
    node_a, node_b = node(owner, "a"), node(owner, "b")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        # Another claim's transaction, caught between locking its run and committing.
        try:
            with transaction.atomic():
                Run.objects.select_for_update().get(pk=first.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        c = services.run_claim(node=node_b)  # the plan gives `first` to a, `second` to b
        assert c is not None
        assert c.run.pk == second.pk
        # a's own claim would take the locked run: it skips it rather than wait, and gets nothing yet.
        assert services.run_claim(node=node_a) is None
    finally:
        release.set()
        holder.join(timeout=30)
    assert claim(node_a).run.pk == first.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_for_one_gpu_node_never_give_out_more_gpus_than_it_has(owner, race):
    project, version = race
    gpu_runs = [submit(project, version, requirements={"gpu": True}) for _ in range(3)]
    box = node(owner, max_concurrency=4)
    services.node_seen(node=box, capabilities={"gpus": [{"index": 0, "memory_total_mb": 81559}]})
    claimed: list[int] = []

    def take(_: int) -> None:
        c = services.run_claim(node=box)
        if c is not None:
            claimed.append(c.run.pk)

    assert not in_threads(take, range(4))
    assert claimed == [gpu_runs[0].pk]
