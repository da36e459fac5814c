"""The node trust model (apps/compute/trust.py): a run goes only to nodes its project trusts —
staff-shared nodes, and nodes of the project's writers that are the creator's or list the
project; a reviewer's independent rerun never to a node of a project member."""

import importlib
import itertools

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services, trust
from apps.compute.management.commands.run_embedded import LOCAL_NODE_OWNER, local_node_token
from apps.compute.models import Node, Run
from apps.projects.models import Membership, Role

from ..factories import make_project, make_user, upload_notebook
from .test_concurrent_claims import in_threads

CREW = trust.Crew(members=frozenset({1, 2, 3}), writers=frozenset({1, 2}))  # 3 is a viewer


def node_facts(owner: int, *, shared: bool = False, projects: tuple[int, ...] = ()) -> trust.NodeFacts:
    return trust.NodeFacts(id=owner * 10, owner_id=owner, staff_shared=shared, project_ids=frozenset(projects))


class TestMayTake:
    run = trust.RunFacts(project_id=7, created_by_id=1, independent=False)
    rerun = trust.RunFacts(project_id=7, created_by_id=9, independent=True)  # 9: a reviewer

    def test_the_creators_own_node_takes_their_run(self):
        assert trust.may_take(self.run, node_facts(1), CREW)

    def test_a_writers_node_listing_the_project_takes_its_runs(self):
        assert trust.may_take(self.run, node_facts(2, projects=(7,)), CREW)
        assert not trust.may_take(self.run, node_facts(2), CREW)

    def test_a_viewers_node_takes_nothing_even_listing_the_project(self):
        assert not trust.may_take(self.run, node_facts(3, projects=(7,)), CREW)

    def test_an_outsiders_node_takes_nothing_even_listing_the_project(self):
        assert not trust.may_take(self.run, node_facts(5, projects=(7,)), CREW)

    def test_a_staff_shared_node_takes_any_run(self):
        assert trust.may_take(self.run, node_facts(5, shared=True), CREW)

    def test_an_independent_rerun_goes_to_its_creators_node_or_staff_shared_ones(self):
        assert trust.may_take(self.rerun, node_facts(9), CREW)
        assert trust.may_take(self.rerun, node_facts(5, shared=True), CREW)

    @pytest.mark.parametrize("owner", [1, 2, 3])
    def test_an_independent_rerun_never_goes_to_a_members_node(self, owner):
        for facts in (node_facts(owner), node_facts(owner, shared=True), node_facts(owner, projects=(7,))):
            assert not trust.may_take(self.rerun, facts, CREW)

    def test_an_independent_rerun_does_not_go_to_an_outsiders_ordinary_node(self):
        assert not trust.may_take(self.rerun, node_facts(5, projects=(7,)), CREW)


@pytest.mark.django_db
def test_the_query_and_the_predicate_agree_on_every_combination():
    """`runs_for_node` (one claimer's candidates) and `may_take` (the plan across nodes) are the
    same rule: checked over every owner role x staff x shared x listing x creator x independent."""
    author = make_user("author")
    project = make_project(author, slug="lab", visibility="private")
    version = upload_notebook(project, author).version
    owners: list[User] = []
    for role, staff in itertools.product([None, Role.VIEWER, Role.MEMBER, Role.MAINTAINER, Role.OWNER], [False, True]):
        user = author if role == Role.OWNER and not staff else make_user(f"u-{role}-{staff}", staff=staff)
        if role is not None and user != author:
            Membership.objects.create(project=project, user=user, role=role)
        owners.append(user)
    nodes = []
    for user, shared, lists in itertools.product(owners, [False, True], [False, True]):
        node = services.node_register(owner=user, name=f"n-{shared}-{lists}", projects=[project] if lists else []).node
        # Shared regardless of staff: the rule must hold for stored data the API would refuse
        # today (nodes shared before the rule, owners who lost staff).
        Node.objects.filter(pk=node.pk).update(shared=shared)
        nodes.append(node)
    runs = [
        services.run_submit(project=project, user=user, notebook_version=version, independent=independent)
        for user, independent in itertools.product(owners, [False, True])
    ]
    crew = trust.crews({project.pk}, {u.pk for u in owners})[project.pk]
    checked = 0
    for node in Node.objects.select_related("owner").prefetch_related("projects"):
        by_query = set(Run.objects.filter(trust.runs_for_node(node)).values_list("pk", flat=True))
        by_rule = {r.pk for r in runs if trust.may_take(trust.run_facts(r), trust.node_facts(node), crew)}
        assert by_query == by_rule, node
        checked += len(runs)
    assert checked == len(nodes) * len(runs) == 40 * 20


@pytest.mark.django_db(transaction=True)
def test_an_outsiders_nodes_never_receive_a_private_run_with_several_agents_claiming_at_once():
    author = make_user("ada")
    project = make_project(author, slug="secret", visibility="private")
    version = upload_notebook(project, author).version
    runs = [services.run_submit(project=project, user=author, notebook_version=version) for _ in range(4)]
    outsider = make_user("mallory")
    plain = services.node_register(owner=outsider, name="plain", max_concurrency=4).node
    listing = services.node_register(owner=outsider, name="listing", max_concurrency=4).node
    listing.projects.add(project)  # what the API refuses to a non-member, stored anyway
    posing = services.node_register(owner=outsider, name="posing", max_concurrency=4).node
    Node.objects.filter(pk=posing.pk).update(shared=True)  # shared without being staff
    lab = services.node_register(owner=author, name="lab", max_concurrency=4).node
    attackers = [plain, listing, posing] * 3
    for node in [*attackers, lab]:
        services.node_seen(node=node)
    taken: list[tuple[int, int]] = []

    def take(node: Node) -> None:
        for _ in range(2):
            claim = services.run_claim(node=node)
            if claim is not None:
                taken.append((node.pk, claim.run.pk))

    assert not in_threads(take, [*attackers, lab, lab])
    assert {node_id for node_id, _ in taken} <= {lab.pk}
    assert not Run.objects.filter(node__owner=outsider).exists()
    assert sorted(run_id for _, run_id in taken) == sorted(r.pk for r in runs)


@pytest.mark.django_db
def test_a_removed_members_node_stops_taking_the_projects_runs():
    author, former = make_user("ada"), make_user("fred")
    project = make_project(author, slug="lab", visibility="private", members={former: Role.MEMBER})
    node = services.node_register(owner=former, name="box", projects=[project]).node
    services.node_seen(node=node)
    Membership.objects.filter(project=project, user=former).delete()
    services.run_submit(project=project, user=author, notebook_version=upload_notebook(project, author).version)
    assert services.run_claim(node=node) is None


@pytest.mark.django_db
def test_a_non_staff_user_cannot_share_a_node_through_the_model():
    with pytest.raises(ValidationError, match="Only staff"):
        services.node_register(owner=make_user("otto"), name="x", shared=True)
    assert not Node.objects.exists()


# --- the API and the pages ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_it_refuses_a_shared_node_to_a_non_staff_user(client_for, outsider):
    response = client_for(outsider).post("/api/v1/nodes/", {"name": "x", "shared": True}, format="json")
    assert response.status_code == 403
    assert "Only staff" in response.json()["detail"]
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_staff_may_register_a_shared_node(client_for):
    response = client_for(make_user("root", staff=True)).post(
        "/api/v1/nodes/", {"name": "pool", "shared": True}, format="json"
    )
    assert response.status_code == 201
    assert Node.objects.get(name="pool").shared


@pytest.mark.django_db
def test_it_refuses_to_make_an_existing_node_shared_for_a_non_staff_user(client_for, outsider):
    node = services.node_register(owner=outsider, name="x").node
    response = client_for(outsider).patch(f"/api/v1/nodes/{node.pk}/", {"shared": True}, format="json")
    assert response.status_code == 403
    node.refresh_from_db()
    assert not node.shared


@pytest.mark.django_db
def test_a_viewer_cannot_list_the_project_on_a_node(client_for, team, private_project):
    response = client_for(team["viewer"]).post(
        "/api/v1/nodes/", {"name": "x", "projects": [private_project.slug]}, format="json"
    )
    assert response.status_code == 400
    assert "member role or higher" in str(response.json()["projects"])
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_the_node_form_offers_sharing_to_staff_only(client):
    client.force_login(make_user("otto"))
    assert 'name="shared"' not in client.get("/nodes/new/").content.decode()
    client.force_login(make_user("root", staff=True))
    assert 'name="shared"' in client.get("/nodes/new/").content.decode()


@pytest.mark.django_db
def test_a_non_staff_form_post_with_shared_registers_an_ordinary_node(client):
    client.force_login(make_user("otto"))
    client.post("/nodes/new/", {"name": "box", "max_concurrency": 1, "shared": "on"})
    assert Node.objects.get(name="box").shared is False


@pytest.mark.django_db
def test_the_nodes_page_lists_every_node_that_may_take_my_runs(client, team, private_project):
    staff_pool = services.node_register(owner=make_user("root", staff=True), name="staff-pool", shared=True).node
    labmate = services.node_register(owner=team["maintainer"], name="maya-box", projects=[private_project]).node
    services.node_register(owner=team["outsider"], name="oscar-box")
    viewer_box = services.node_register(owner=team["viewer"], name="vic-box").node
    viewer_box.projects.add(private_project)  # a viewer's node cannot take the project's runs
    client.force_login(team["member"])
    page = client.get("/nodes/").content.decode()
    serving = page[page.index('id="serving"') :]
    assert staff_pool.name in serving
    assert "any of your runs" in serving
    assert labmate.name in serving
    assert f'your runs in <a href="/p/{private_project.slug}/">' in serving
    assert "oscar-box" not in page
    assert "vic-box" not in page


# --- the embedded mode's local node and the migration ------------------------------------------------
@pytest.mark.django_db
def test_the_local_node_belongs_to_a_staff_system_account_nobody_can_log_in_to():
    local_node_token(2)
    owner = User.objects.get(username=LOCAL_NODE_OWNER)
    assert owner.is_staff
    assert not owner.has_usable_password()
    node = Node.objects.get(owner=owner)
    assert trust.is_staff_shared(node)


@pytest.mark.django_db
def test_a_person_signed_up_as_the_local_node_account_is_never_made_staff():
    make_user(LOCAL_NODE_OWNER)
    with pytest.raises(CommandError, match="person's account"):
        local_node_token(2)
    assert not User.objects.get(username=LOCAL_NODE_OWNER).is_staff
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_the_migration_unshares_nodes_of_non_staff_owners():
    migration = importlib.import_module("apps.compute.migrations.0004_shared_nodes_are_staff_only")
    person = services.node_register(owner=make_user("otto"), name="x").node
    staff = services.node_register(owner=make_user("root", staff=True), name="y", shared=True).node
    Node.objects.filter(pk=person.pk).update(shared=True)
    migration.forward(django_apps, None)
    assert not Node.objects.get(pk=person.pk).shared
    assert Node.objects.get(pk=staff.pk).shared


@pytest.mark.django_db(transaction=True)  # the claim view is async: its queries commit for real
def test_the_attack_of_issue_9_gets_nothing_through_the_api(client_for, outsider, private_project, team):
    """An ordinary account registers a node asking to share it, then one it may register, lists
    the private project on it, and claims: 403, 400, then 204 with the private run still queued."""
    author = team["owner"]
    run = services.run_submit(
        project=private_project, user=author, notebook_version=upload_notebook(private_project, author).version
    )
    api = client_for(outsider)
    assert api.post("/api/v1/nodes/", {"name": "x", "shared": True}, format="json").status_code == 403
    listed = api.post("/api/v1/nodes/", {"name": "x", "projects": [private_project.slug]}, format="json")
    assert listed.status_code == 400
    token = api.post("/api/v1/nodes/", {"name": "x"}, format="json").json()["token"]
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert agent.post("/api/v1/agent/claim/?wait=0").status_code == 204
    run.refresh_from_db()
    assert run.state == "queued"
    assert run.node is None


@pytest.mark.django_db
@pytest.mark.parametrize("change", ["revoke", "remove_member", "unstaff"])
def test_a_node_that_loses_trust_cannot_renew_or_complete_the_run_it_holds(change):
    author, labmate = make_user("ada"), make_user("lars", staff=True)
    project = make_project(author, slug="lab", visibility="private", members={labmate: Role.MEMBER})
    run = services.run_submit(project=project, user=author, notebook_version=upload_notebook(project, author).version)
    box = services.node_register(
        owner=labmate, name="box", projects=[] if change == "unstaff" else [project], shared=change == "unstaff"
    ).node
    services.node_seen(node=box)
    claim = services.run_claim(node=box)
    assert claim is not None
    assert claim.run.pk == run.pk
    services.run_heartbeat(run=run, lease_id=claim.lease_id)  # trusted: renews
    if change == "revoke":
        services.node_revoke(node=box)
    elif change == "remove_member":
        Membership.objects.filter(project=project, user=labmate).delete()
    else:
        User.objects.filter(pk=labmate.pk).update(is_staff=False)
    with pytest.raises(services.StaleLease, match="no longer"):
        services.run_heartbeat(run=run, lease_id=claim.lease_id)
    with pytest.raises(services.StaleLease):
        services.run_complete(run=run, lease_id=claim.lease_id, state="failed")
    run.refresh_from_db()
    assert not run.is_final


@pytest.mark.django_db
def test_a_claim_long_poll_does_not_claim_on_trust_lost_while_it_waited(monkeypatch, rf):
    """The poll authenticates once, then tries again and again: each try reads the node afresh."""
    from asgiref.sync import async_to_sync

    from apps.compute import agent_views

    monkeypatch.setattr("channels.db.close_old_connections", lambda: None)  # keep the test's connection
    author = make_user("ada")
    project = make_project(author, slug="lab", visibility="private")
    waiting = services.node_register(owner=author, name="box").node  # as authenticated at the poll's start
    services.node_revoke(node=Node.objects.get(pk=waiting.pk))
    services.run_submit(project=project, user=author, notebook_version=upload_notebook(project, author).version)
    assert async_to_sync(agent_views._try_claim)(waiting, rf.post("/api/v1/agent/claim/")) is None
    assert not Run.objects.exclude(node=None).exists()
