"""A run with a declared environment goes only to nodes that build environments on a Python it
allows (the lock is resolved for one Python minor version)."""

from apps.compute.scheduling import NodeSlot, QueuedRun, can_run


def node(**fields) -> NodeSlot:
    return NodeSlot(id=1, tags=frozenset(), max_concurrency=1, running=0, **fields)


def test_declared_environments_need_a_node_that_builds_them_on_the_same_python():
    declared = QueuedRun(id=1, owner_id=1, priority=0, queued_at=0, environment=True, python_minimum="3.11")
    assert can_run(declared, node(environments=True, python_version="3.11.7"))
    assert not can_run(declared, node(environments=False, python_version="3.11.7"))  # an old agent, or no uv
    assert not can_run(declared, node(environments=True, python_version="3.12.1"))
    assert not can_run(declared, node(environments=True, python_version="junk"))
    narrow = QueuedRun(
        id=2, owner_id=1, priority=0, queued_at=0, environment=True, python_minimum="3.11", requires_python="<3.11.5"
    )
    assert not can_run(narrow, node(environments=True, python_version="3.11.7"))
    base = QueuedRun(id=3, owner_id=1, priority=0, queued_at=0)
    assert can_run(base, node())  # nothing declared: any node, as before
