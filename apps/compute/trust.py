"""Who may run what: the node trust model.

A node sees the code and data of every run it takes, and can forge that run's result. So a run
goes only to nodes its project trusts, as CI runners work (GitLab's instance runners, GitHub's
organisation runners):

- **staff-shared nodes**: `shared` nodes whose owner is active staff. Only staff may mark a node
  shared; a shared node whose owner is no longer staff is an ordinary node again.
- **the project's own nodes**: nodes owned by a current member of the run's project with the
  member role or higher (viewers cannot write results, so their nodes cannot either), that are
  the run creator's own nodes or list the project.
- **independent runs** (a reviewer's rerun) go to the creator's own nodes or to staff-shared
  nodes, and never to a node owned by any member of the project: the authors' machines must not
  produce the proof of their own work.

The rule is written twice, once for each way the claim path asks it: `may_take` over plain
data (the scheduler's plan across every active node) and `runs_for_node` as a query (the runs
one claiming node may consider). `tests/compute/test_trust.py` checks that the two agree on
every combination of the facts they read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Exists, OuterRef, Q

from apps.projects.models import ROLE_RANK, Membership, Role
from apps.projects.permissions import CAN_UPLOAD

if TYPE_CHECKING:
    from .models import Node, Run

# The roles whose nodes may run (and so write the results of) a project's runs.
WRITER_ROLES = tuple(role for role in Role if ROLE_RANK[role] >= ROLE_RANK[CAN_UPLOAD])


@dataclass(frozen=True)
class NodeFacts:
    id: int
    owner_id: int
    staff_shared: bool
    project_ids: frozenset[int]


@dataclass(frozen=True)
class RunFacts:
    project_id: int
    created_by_id: int | None
    independent: bool


@dataclass(frozen=True)
class Crew:
    """The members of one project, among the owners of the nodes being considered."""

    members: frozenset[int] = frozenset()  # any role
    writers: frozenset[int] = frozenset()  # member role or higher


SHARING_REFUSED = "Only staff can share a node with everyone on the site: it would see every user's runs."


def may_share_nodes(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def is_staff_shared(node: Node) -> bool:
    return node.shared and node.owner.is_staff and node.owner.is_active


def node_facts(node: Node) -> NodeFacts:
    """Facts of a node loaded with `owner` and `projects` (select/prefetch them)."""
    return NodeFacts(
        id=node.pk,
        owner_id=node.owner_id,
        staff_shared=is_staff_shared(node),
        project_ids=frozenset(p.pk for p in node.projects.all()),
    )


def run_facts(run: Run) -> RunFacts:
    return RunFacts(project_id=run.project_id, created_by_id=run.created_by_id, independent=run.independent)


def crews(project_ids: set[int], user_ids: set[int]) -> dict[int, Crew]:
    """Who of `user_ids` is a member (and a writer) of each of `project_ids`: one query."""
    members: dict[int, set[int]] = {}
    writers: dict[int, set[int]] = {}
    rows = Membership.objects.filter(project_id__in=project_ids, user_id__in=user_ids)
    for project_id, user_id, role in rows.values_list("project_id", "user_id", "role"):
        members.setdefault(project_id, set()).add(user_id)
        if role in WRITER_ROLES:
            writers.setdefault(project_id, set()).add(user_id)
    return {
        project_id: Crew(members=frozenset(members.get(project_id, ())), writers=frozenset(writers.get(project_id, ())))
        for project_id in project_ids
    }


def may_take(run: RunFacts, node: NodeFacts, crew: Crew) -> bool:
    """Whether `node` may run `run`; `crew` is the run's project's."""
    if run.independent:
        if node.owner_id in crew.members:
            return False
        return node.staff_shared or node.owner_id == run.created_by_id
    if node.staff_shared:
        return True
    if node.owner_id not in crew.writers:
        return False
    return node.owner_id == run.created_by_id or run.project_id in node.project_ids


def allowed_node_ids(run: RunFacts, nodes: Sequence[NodeFacts], crew: Crew) -> frozenset[int]:
    return frozenset(node.id for node in nodes if may_take(run, node, crew))


def runs_for_node(node: Node) -> Q:
    """`may_take` as a filter on Run, for the one node `node` (loaded with its owner)."""
    owner = node.owner_id
    member = Exists(Membership.objects.filter(project=OuterRef("project"), user_id=owner))
    writer = Exists(Membership.objects.filter(project=OuterRef("project"), user_id=owner, role__in=WRITER_ROLES))
    if is_staff_shared(node):
        return Q(independent=False) | Q(~member)
    own_independent = Q(independent=True, created_by_id=owner) & ~member
    project_run = Q(independent=False) & writer & (Q(created_by_id=owner) | Q(project__in=node.projects.all()))
    return own_independent | project_run
