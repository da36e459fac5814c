"""The scheduler's constraints on a claim, through the service layer and the database: tags, GPUs
(a node's GPUs are slots that its leased and running runs hold), GPU memory, isolation, network,
max_concurrency and priority; and one node's odd stored data never stops anyone's claim."""

import pytest

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node, Run, RunState

from .helpers import claim, node, submit, succeed


def gpu_node(owner: User, name: str, *memories: int, max_concurrency: int = 4, **capabilities) -> Node:
    box = node(owner, name, max_concurrency=max_concurrency)
    gpus = [{"index": i, "memory_total_mb": memory} for i, memory in enumerate(memories)]
    services.node_seen(node=box, capabilities={"gpus": gpus, **capabilities})
    return box


@pytest.mark.django_db
class TestScheduling:
    def test_tags_are_required(self, project, version, owner):
        run = submit(project, version, requirements={"tags": ["cuda"]})
        assert services.run_claim(node=node(owner, "plain")) is None
        assert claim(node(owner, "tagged", tags=["CUDA", "fast"])).run.pk == run.pk

    def test_a_gpu_run_needs_a_node_with_a_gpu_with_enough_memory(self, project, version, owner):
        run = submit(project, version, requirements={"gpu": True, "min_gpu_memory_mb": 40000})
        assert services.run_claim(node=node(owner, "cpu")) is None
        small = node(owner, "small-gpu")
        services.node_seen(node=small, capabilities={"gpus": [{"memory_mb": 16000}, {"memory_mb": 24000}]})
        assert services.run_claim(node=small) is None
        big = node(owner, "big-gpu")
        services.node_seen(node=big, capabilities={"gpus": [{"name": "H100", "memory_mb": 80000}]})
        assert claim(big).run.pk == run.pk

    @pytest.mark.parametrize(
        "capabilities",
        [
            {"gpus": [{"memory_total_mb": "lots"}]},
            {"gpus": [{"memory_total_mb": 2**70}, "not a gpu", None]},
            {"gpus": [{"memory_total_mb": -5}, {"memory_mb": True}]},
            {"gpus": "many"},
            {"gpus": [{"memory_total_mb": 80000}], "isolation": {"level": "bwrap"}, "gpu_sharing": [True]},
            {"network": {"yes": True}, "limits": "none", "warm_kernels": 7},
            [],
        ],
    )
    def test_one_nodes_odd_stored_capabilities_never_stop_scheduling(self, project, version, owner, capabilities):
        """Stored data the API would refuse today (older agents, a direct write) cannot make every
        node's claim fail: the odd node counts as having no GPU."""
        run = submit(project, version, requirements={"tags": ["fine"]})
        odd = node(owner, "odd")
        Node.objects.filter(pk=odd.pk).update(capabilities=capabilities, tags=["ok", 3])
        assert claim(node(owner, "fine", tags=["fine"])).run.pk == run.pk

    def test_never_above_max_concurrency(self, project, version, owner):
        runs = [submit(project, version) for _ in range(3)]
        box = node(owner, max_concurrency=2)
        first, second = claim(box), claim(box)
        assert services.run_claim(node=box) is None
        assert {first.run.pk, second.run.pk} == {runs[0].pk, runs[1].pk}
        # A finished run frees its slot.
        succeed(first)
        assert claim(box).run.pk == runs[2].pk

    def test_higher_priority_first_then_oldest(self, project, version, owner):
        low = submit(project, version, priority=-1)
        old = submit(project, version)
        new = submit(project, version)
        urgent = submit(project, version, priority=10)
        box = node(owner, max_concurrency=4)
        assert [claim(box).run.pk for _ in range(4)] == [urgent.pk, old.pk, new.pk, low.pk]

    def test_a_run_the_scheduler_gives_to_another_active_node_is_left_to_it(self, project, version, owner):
        gpu_run = submit(project, version, requirements={"gpu": True})
        gpu_node = node(owner, "gpu")
        services.node_seen(node=gpu_node, capabilities={"gpus": [{"memory_mb": 80000}]})
        cpu_run = submit(project, version)
        cpu_node = node(owner, "cpu")
        assert claim(cpu_node).run.pk == cpu_run.pk
        assert claim(gpu_node).run.pk == gpu_run.pk


@pytest.mark.django_db
class TestGpuSlots:
    def test_a_second_gpu_run_waits_until_the_first_finishes(self, project, version, owner):
        first = submit(project, version, requirements={"gpu": True})
        second = submit(project, version, requirements={"gpus": 1})
        box = gpu_node(owner, "one-gpu", 80000, max_concurrency=2)
        c = claim(box)
        assert c.run.pk == first.pk
        assert services.run_claim(node=box) is None  # a run slot is free, the GPU is not
        services.run_heartbeat(run=c.run, lease_id=c.lease_id, running=True)
        assert services.run_claim(node=box) is None  # running holds it too
        succeed(c)
        assert claim(box).run.pk == second.pk

    def test_cpu_work_is_not_held_back_by_a_gpu_run_waiting_for_its_gpu(self, project, version, owner):
        submit(project, version, requirements={"gpu": True})
        waiting = submit(project, version, requirements={"gpu": True}, priority=5)
        cpu_run = submit(project, version)
        box = gpu_node(owner, "one-gpu", 80000)
        assert claim(box).run.pk == waiting.pk
        assert claim(box).run.pk == cpu_run.pk
        assert services.run_claim(node=box) is None

    def test_a_run_leased_before_gpus_existed_holds_one_gpu(self, project, version, owner):
        old = submit(project, version)
        Run.objects.filter(pk=old.pk).update(requirements={"tags": [], "gpu": True, "min_gpu_memory_mb": 0})
        box = gpu_node(owner, "one-gpu", 80000)
        assert claim(box).run.pk == old.pk  # an old row still schedules
        submit(project, version, requirements={"gpu": True})
        assert services.run_claim(node=box) is None

    def test_a_multi_gpu_run_holds_all_its_gpus(self, project, version, owner):
        big = submit(project, version, requirements={"gpus": 2, "min_gpu_memory_mb": 40000})
        small = submit(project, version, requirements={"gpus": 1})
        box = gpu_node(owner, "two-gpus", 80000, 80000)
        assert claim(box).run.pk == big.pk
        assert services.run_claim(node=box) is None
        assert Run.objects.get(pk=small.pk).state == RunState.QUEUED

    def test_each_gpu_must_have_the_memory(self, project, version, owner):
        submit(project, version, requirements={"gpus": 2, "min_gpu_memory_mb": 40000})
        assert services.run_claim(node=gpu_node(owner, "mixed", 80000, 16000)) is None
        assert claim(gpu_node(owner, "two-big", 80000, 48000)).run.requirements["gpus"] == 2

    def test_a_node_that_shares_its_gpus_takes_gpu_runs_side_by_side(self, project, version, owner):
        runs = {submit(project, version, requirements={"gpu": True}).pk for _ in range(2)}
        box = gpu_node(owner, "shared-gpu", 80000, gpu_sharing=True)
        assert {claim(box).run.pk, claim(box).run.pk} == runs


@pytest.mark.django_db
class TestIsolationAndNetwork:
    @pytest.mark.parametrize(
        ("required", "takers"),
        [("sandbox", {"bwrap"}), ("limits", {"uid", "bwrap"}), ("none", {"none", "uid", "bwrap", "absent"})],
    )
    def test_a_run_goes_only_to_a_node_with_the_isolation_it_requires(self, project, version, owner, required, takers):
        run = submit(project, version, requirements={"isolation": required})
        for level in ("absent", "none", "uid", "bwrap"):
            box = node(owner, f"box-{level}")
            services.node_seen(node=box, capabilities={} if level == "absent" else {"isolation": level})
            claimed = services.run_claim(node=box)
            assert (claimed is not None) == (level in takers), level
            if claimed is not None:
                assert claimed.run.pk == run.pk
                return

    def test_a_run_that_needs_the_network_goes_only_to_a_node_that_allows_it(self, project, version, owner):
        run = submit(project, version, requirements={"network": True})
        closed = node(owner, "closed")
        services.node_seen(node=closed, capabilities={"network": False})
        assert services.run_claim(node=closed) is None
        opened = node(owner, "open")
        services.node_seen(node=opened, capabilities={"network": True})
        assert claim(opened).run.pk == run.pk

    @pytest.mark.parametrize(
        "capabilities",
        [
            {"network": "yes", "isolation": ["bwrap"]},
            {"network": 1, "isolation": "BWRAP"},
            {"network": None, "isolation": None, "gpu_sharing": "yes"},
        ],
    )
    def test_odd_stored_isolation_or_network_counts_as_none(self, project, version, owner, capabilities):
        submit(project, version, requirements={"network": True})
        submit(project, version, requirements={"isolation": "limits"})
        odd = node(owner, "odd")
        Node.objects.filter(pk=odd.pk).update(capabilities=capabilities)
        assert services.run_claim(node=odd) is None


@pytest.mark.django_db
@pytest.mark.parametrize("stored", [{"gpus": "two", "tags": "x"}, ["gpu"], {"gpus": -3, "gpu": "yes"}, "gpu", 7])
def test_odd_stored_requirements_never_stop_scheduling(project, version, owner, stored):
    """Rows the service would refuse today (a direct write, an older site) read as asking for
    nothing: neither a queued nor an active run with odd requirements breaks a claim."""
    box = gpu_node(owner, "gpu", 80000)
    active = claim_after(submit(project, version), box)
    Run.objects.filter(pk=active.pk).update(requirements=stored)
    queued = submit(project, version)
    Run.objects.filter(pk=queued.pk).update(requirements=stored)
    assert claim(box).run.pk == queued.pk


def claim_after(run: Run, box: Node) -> Run:
    claimed = claim(box)
    assert claimed.run.pk == run.pk
    return claimed.run
