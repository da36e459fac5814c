"""The lease protocol through the service layer: submission and its validation, who may claim
what, dependencies, heartbeats, events, output, completion, the lease sweeper and cancelling
(the scheduler's constraints on claims: test_claims.py; concurrent claims:
test_concurrent_claims.py; requirements: test_requirements.py)."""

import datetime as dt
import hashlib
import io
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.compute import services
from apps.compute.models import Run, RunEvent, RunState
from apps.projects.models import Membership, Role

from ..factories import make_project, make_user, upload_notebook
from .helpers import OUTPUT, claim, expire, last_event, messages, node, submit, succeed, upload


# --- helpers ----------------------------------------------------------------------------------------
# --- submission ------------------------------------------------------------------------------------
@pytest.mark.django_db
class TestSubmit:
    def test_a_valid_submission_is_queued_with_a_state_event(self, project, version):
        run = submit(project, version, parameters={"alpha": 0.25, "steps": 3}, priority=5)
        run.refresh_from_db()
        assert (run.state, run.attempt, run.priority) == (RunState.QUEUED, 1, 5)
        assert run.parameters == {"alpha": 0.25, "steps": 3}
        assert list(run.events.values_list("seq", "kind", "payload")) == [(1, "state", {"state": "queued"})]

    def test_an_undeclared_parameter_is_rejected_with_the_declared_names(self, project, version):
        with pytest.raises(ValidationError) as exc:
            submit(project, version, parameters={"beta": 1})
        assert "'beta' is not a parameter of this notebook (declared: alpha, steps)." in messages(exc)
        assert not Run.objects.exists()

    @pytest.mark.parametrize("name", ["not-an-identifier", "1st", "class", "import", "a b", ""])
    def test_names_that_are_not_identifiers_or_are_keywords_are_rejected(self, project, version, name):
        with pytest.raises(ValidationError) as exc:
            submit(project, version, parameters={name: 1})
        assert f"'{name}' is not a valid parameter name." in messages(exc)

    @pytest.mark.parametrize(
        ("parameters", "message"),
        [
            ({"steps": "10"}, "'steps' must be an integer (declared int), got str."),
            ({"steps": True}, "'steps' must be an integer (declared int), got bool."),
            ({"steps": 1.5}, "'steps' must be an integer (declared int), got float."),
            ({"alpha": "0.5"}, "'alpha' must be a number (declared float), got str."),
            ({"alpha": False}, "'alpha' must be a number (declared float), got bool."),
        ],
    )
    def test_values_of_the_wrong_type_are_rejected(self, project, version, parameters, message):
        with pytest.raises(ValidationError) as exc:
            submit(project, version, parameters=parameters)
        assert message in messages(exc)

    def test_an_int_is_accepted_for_a_float_and_null_for_anything(self, project, version):
        run = submit(project, version, parameters={"alpha": 2, "steps": None})
        assert run.parameters == {"alpha": 2, "steps": None}

    def test_every_problem_is_reported_at_once(self, project, version):
        with pytest.raises(ValidationError) as exc:
            submit(project, version, parameters={"steps": "x", "class": 1, "beta": 2})
        assert exc.value.message_dict["parameters"] == [
            "'steps' must be an integer (declared int), got str.",
            "'class' is not a valid parameter name.",
            "'beta' is not a parameter of this notebook (declared: alpha, steps).",
        ]

    def test_parameters_must_be_an_object(self, project, version):
        with pytest.raises(ValidationError) as exc:
            submit(project, version, parameters=[1, 2])
        assert "Parameters must be a JSON object of name: value." in messages(exc)

    def test_the_notebook_version_and_dependencies_must_be_in_the_project(self, project, version, owner):
        other = make_project(owner, slug="elsewhere")
        foreign_version = upload_notebook(other, owner).version
        with pytest.raises(ValidationError, match="not in this project"):
            submit(project, foreign_version)
        foreign_run = submit(other, foreign_version)
        with pytest.raises(ValidationError, match=f"Run {foreign_run.pk} is not in this project"):
            submit(project, version, depends_on=[foreign_run])


# --- who may claim what ----------------------------------------------------------------------------
@pytest.mark.django_db
class TestEligibility:
    def test_a_node_takes_its_owners_run(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        assert c.run.pk == run.pk
        run.refresh_from_db()
        assert run.state == RunState.LEASED
        assert str(run.lease_id) == c.lease_id
        assert run.lease_expires_at == c.lease_expires_at
        assert c.run_token.startswith(services.RUN_TOKEN_PREFIX)
        assert last_event(run).payload == {"state": "leased", "node": "box", "attempt": 1}

    def test_an_empty_queue_gives_nothing(self, owner):
        assert services.run_claim(node=node(owner)) is None

    def test_a_private_node_of_another_user_does_not_take_the_run(self, project, version, outsider):
        submit(project, version)
        assert services.run_claim(node=node(outsider)) is None

    def test_a_staff_shared_node_takes_anyones_run(self, project, version):
        run = submit(project, version)
        assert claim(node(make_user("stella", staff=True), shared=True)).run.pk == run.pk

    def test_a_node_listing_a_project_takes_that_projects_runs_only(self, project, version, owner):
        colleague = make_user("cora")
        theirs = make_project(colleague, slug="theirs")
        submit(theirs, upload_notebook(theirs, colleague).version, user=colleague)
        run = submit(project, version, user=owner)
        labmate = make_user("lars")
        Membership.objects.create(project=project, user=labmate, role=Role.MEMBER)
        project_node = node(labmate, projects=[project], max_concurrency=2)
        assert claim(project_node).run.pk == run.pk
        assert services.run_claim(node=project_node) is None  # the other project's run is not its business
        assert Run.objects.filter(project=theirs, state=RunState.QUEUED).count() == 1

    def test_a_revoked_node_cannot_authenticate(self, owner):
        registered = services.node_register(owner=owner, name="gone")
        authenticated = services.node_authenticate(raw=registered.token)
        assert authenticated is not None
        assert authenticated.pk == registered.node.pk
        services.node_revoke(node=registered.node)
        assert services.node_authenticate(raw=registered.token) is None
        assert services.node_authenticate(raw="rln_" + "x" * 40) is None
        assert services.node_authenticate(raw="not-a-node-token") is None


# --- dependencies ------------------------------------------------------------------------------------
@pytest.mark.django_db
class TestDependencies:
    def test_a_dependent_waits_until_its_dependency_succeeded(self, project, version, owner):
        first = submit(project, version)
        second = submit(project, version, depends_on=[first], priority=100)
        box = node(owner, max_concurrency=2)
        c = claim(box)
        assert c.run.pk == first.pk  # despite the dependent's higher priority
        assert services.run_claim(node=box) is None
        services.run_heartbeat(run=c.run, lease_id=c.lease_id, running=True)
        assert services.run_claim(node=box) is None  # running is not succeeded
        succeed(c)
        assert claim(box).run.pk == second.pk

    def test_a_failed_dependency_fails_its_dependents_recursively(self, project, version, owner):
        first = submit(project, version)
        second = submit(project, version, depends_on=[first])
        third = submit(project, version, depends_on=[second])
        unrelated = submit(project, version)
        c = claim(node(owner))
        services.run_complete(run=c.run, lease_id=c.lease_id, state=RunState.FAILED, error="boom")
        for run in (first, second, third, unrelated):
            run.refresh_from_db()
        assert (first.state, first.error) == (RunState.FAILED, "boom")
        assert (second.state, second.error) == (RunState.FAILED, f"Dependency run {first.pk} failed.")
        assert (third.state, third.error) == (RunState.FAILED, f"Dependency run {second.pk} failed.")
        assert second.finished_at is not None
        assert third.finished_at is not None
        assert unrelated.state == RunState.QUEUED

    def test_a_cancelled_dependency_fails_dependents(self, project, version):
        first = submit(project, version)
        second = submit(project, version, depends_on=[first])
        services.run_cancel(run=first)
        second.refresh_from_db()
        assert (second.state, second.error) == (RunState.FAILED, f"Dependency run {first.pk} cancelled.")

    def test_submitting_after_an_already_failed_dependency_fails_at_once(self, project, version):
        first = submit(project, version)
        services.run_cancel(run=first)
        first.refresh_from_db()
        second = submit(project, version, depends_on=[first])
        second.refresh_from_db()
        assert (second.state, second.error) == (RunState.FAILED, f"Dependency run {first.pk} cancelled.")


# --- heartbeats, events, output and completion -----------------------------------------------------------
@pytest.mark.django_db
class TestLease:
    def test_heartbeat_renews_the_lease_and_marks_running(self, project, version, owner, settings):
        settings.REPROLAB_LEASE_SECONDS = 60
        run = submit(project, version)
        c = claim(node(owner))
        Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() + dt.timedelta(seconds=5))
        reply = services.run_heartbeat(run=c.run, lease_id=c.lease_id)
        run.refresh_from_db()
        assert run.state == RunState.LEASED
        assert run.started_at is None
        assert reply.lease_expires_at > timezone.now() + dt.timedelta(seconds=50)
        assert run.lease_expires_at == reply.lease_expires_at
        assert reply.cancel_requested is False
        services.run_heartbeat(run=c.run, lease_id=c.lease_id, running=True)
        run.refresh_from_db()
        assert run.state == RunState.RUNNING
        assert run.started_at is not None
        assert last_event(run).payload == {"state": "running"}

    def test_heartbeat_reports_a_cancel_request(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        services.run_cancel(run=run)
        run.refresh_from_db()
        assert (run.state, run.cancel_requested) == (RunState.LEASED, True)
        assert services.run_heartbeat(run=c.run, lease_id=c.lease_id).cancel_requested is True
        services.run_complete(run=c.run, lease_id=c.lease_id, state=RunState.CANCELLED, error="Cancelled.")
        run.refresh_from_db()
        assert run.state == RunState.CANCELLED

    @pytest.mark.parametrize("problem", ["wrong", "expired"])
    def test_a_wrong_or_expired_lease_changes_nothing(self, project, version, owner, problem):
        run = submit(project, version)
        c = claim(node(owner))
        lease_id = c.lease_id
        if problem == "wrong":
            lease_id = str(uuid.uuid4())
        else:
            expire(run)
        with pytest.raises(services.StaleLease):
            services.run_heartbeat(run=c.run, lease_id=lease_id, running=True)
        with pytest.raises(services.StaleLease):
            services.run_events_append(
                run=c.run, lease_id=lease_id, events=[{"agent_seq": 1, "kind": "log", "payload": {}}]
            )
        with pytest.raises(services.StaleLease):
            upload(c.run, lease_id)
        with pytest.raises(services.StaleLease):
            services.run_complete(run=c.run, lease_id=lease_id, state=RunState.FAILED)
        run.refresh_from_db()
        assert run.state == RunState.LEASED
        assert run.pending_output == {}
        assert not run.events.filter(kind="log").exists()

    def test_a_lease_from_a_previous_attempt_is_stale(self, project, version, owner):
        run = submit(project, version)
        box = node(owner)
        old = claim(box)
        expire(run)
        services.expire_leases()
        new = claim(box)
        assert new.run.pk == run.pk
        assert new.lease_id != old.lease_id
        with pytest.raises(services.StaleLease):
            services.run_heartbeat(run=run, lease_id=old.lease_id)
        services.run_heartbeat(run=run, lease_id=new.lease_id)

    def test_events_are_idempotent_per_agent_seq_and_numbered_contiguously(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        batch = [
            {"agent_seq": 2, "kind": "cell_executed", "cell_index": 0, "payload": {"ok": True}},
            {"agent_seq": 1, "kind": "cell_started", "cell_index": 0, "payload": {}},
        ]
        assert services.run_events_append(run=c.run, lease_id=c.lease_id, events=batch) == 2
        assert services.run_events_append(run=c.run, lease_id=c.lease_id, events=batch) == 0
        overlapping = [*batch, {"agent_seq": 3, "kind": "stream", "payload": {"text": "hi\n"}}]
        assert services.run_events_append(run=c.run, lease_id=c.lease_id, events=overlapping) == 1
        events = list(run.events.order_by("seq"))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        agent = [(e.agent_seq, e.kind) for e in events if e.agent_seq is not None]
        assert agent == [(1, "cell_started"), (2, "cell_executed"), (3, "stream")]
        run.refresh_from_db()
        # queued, leased, running (the first batch shows the run started), three agent events
        assert [e.payload.get("state") for e in events[:3]] == ["queued", "leased", "running"]
        assert run.state == "running"
        assert run.last_event_seq == events[-1].seq == 6

    def test_the_next_attempt_numbers_its_events_afresh(self, project, version, owner):
        run = submit(project, version)
        box = node(owner)
        first = claim(box)
        event = [{"agent_seq": 1, "kind": "log", "payload": {"attempt": 1}}]
        assert services.run_events_append(run=run, lease_id=first.lease_id, events=event) == 1
        expire(run)
        services.expire_leases()
        second = claim(box)
        assert services.run_events_append(run=run, lease_id=second.lease_id, events=event) == 1
        assert list(RunEvent.objects.filter(run=run, kind="log").values_list("attempt", flat=True)) == [1, 2]

    def test_an_output_with_a_mismatched_sha256_is_rejected(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        with pytest.raises(ValidationError, match="resend it"):
            services.run_output_upload(
                run=c.run, lease_id=c.lease_id, stream=io.BytesIO(OUTPUT), sha256=hashlib.sha256(b"other").hexdigest()
            )
        run.refresh_from_db()
        assert run.pending_output == {}

    def test_completing_as_succeeded_needs_the_output(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        with pytest.raises(ValidationError, match="Upload the output notebook"):
            services.run_complete(run=c.run, lease_id=c.lease_id, state=RunState.SUCCEEDED)
        with pytest.raises(ValidationError, match="state must be one of"):
            services.run_complete(run=c.run, lease_id=c.lease_id, state=RunState.LOST)
        run.refresh_from_db()
        assert run.state == RunState.LEASED

    def test_a_completed_run_keeps_its_output_and_ends_its_token(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        authenticated = services.run_authenticate(raw=c.run_token)
        assert authenticated is not None
        assert authenticated.pk == run.pk
        assert services.run_authenticate(raw="rlr_wrong") is None
        services.run_heartbeat(run=c.run, lease_id=c.lease_id, running=True)
        succeed(c)
        run.refresh_from_db()
        assert run.state == RunState.SUCCEEDED
        assert run.output_sha256 == hashlib.sha256(OUTPUT).hexdigest()
        assert run.output_size == len(OUTPUT)
        assert run.output_storage_name
        assert (run.lease_id, run.lease_expires_at, run.run_token_hash, run.pending_output) == (None, None, "", {})
        assert run.started_at is not None
        assert run.finished_at is not None
        assert run.finished_at >= run.started_at
        assert services.run_authenticate(raw=c.run_token) is None
        with pytest.raises(services.StaleLease):
            services.run_heartbeat(run=run, lease_id=c.lease_id)

    def test_a_run_token_stops_working_when_the_lease_expires(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        expire(run)
        assert services.run_authenticate(raw=c.run_token) is None


# --- the lease sweeper ---------------------------------------------------------------------------------
@pytest.mark.django_db
class TestExpireLeases:
    def test_a_live_lease_is_left_alone(self, project, version, owner):
        submit(project, version)
        claim(node(owner))
        assert services.expire_leases() == 0

    def test_an_expired_lease_is_requeued_with_the_next_attempt(self, project, version, owner):
        run = submit(project, version)
        c = claim(node(owner))
        services.run_heartbeat(run=c.run, lease_id=c.lease_id, running=True)
        expire(run)
        assert services.expire_leases() == 1
        run.refresh_from_db()
        assert (run.state, run.attempt, run.node, run.lease_id, run.run_token_hash) == (
            RunState.QUEUED,
            2,
            None,
            None,
            "",
        )
        assert last_event(run).payload == {"state": "queued", "attempt": 2, "reason": "lease on box expired"}
        assert services.run_authenticate(raw=c.run_token) is None

    def test_the_last_attempt_is_marked_lost(self, project, version, owner, settings):
        settings.REPROLAB_MAX_ATTEMPTS = 2
        run = submit(project, version)
        box = node(owner)
        for _ in range(2):
            claim(box)
            expire(run)
            services.expire_leases()
        run.refresh_from_db()
        assert (run.state, run.attempt) == (RunState.LOST, 2)
        assert run.error == "The node stopped answering on all 2 attempts."
        assert run.finished_at is not None
        assert services.run_claim(node=box) is None

    def test_an_expired_lease_with_a_cancel_request_is_cancelled(self, project, version, owner):
        run = submit(project, version)
        claim(node(owner))
        services.run_cancel(run=run)
        expire(run)
        assert services.expire_leases() == 1
        run.refresh_from_db()
        assert run.state == RunState.CANCELLED
        assert run.attempt == 1

    def test_claiming_sweeps_first(self, project, version, owner):
        run = submit(project, version)
        box = node(owner)
        claim(box)
        expire(run)
        c = claim(box)  # the sweep inside run_claim requeued it
        assert c.run.pk == run.pk
        assert c.run.attempt == 2


# --- cancelling ----------------------------------------------------------------------------------------
@pytest.mark.django_db
class TestCancel:
    def test_a_queued_run_is_cancelled_at_once(self, project, version, owner):
        run = submit(project, version)
        services.run_cancel(run=run)
        run.refresh_from_db()
        assert (run.state, run.error) == (RunState.CANCELLED, "Cancelled before it started.")
        assert run.finished_at is not None
        assert services.run_claim(node=node(owner)) is None

    def test_a_leased_run_gets_a_cancel_request(self, project, version, owner):
        run = submit(project, version)
        claim(node(owner))
        services.run_cancel(run=run)
        services.run_cancel(run=run)  # asking twice records one request
        run.refresh_from_db()
        assert (run.state, run.cancel_requested, run.finished_at) == (RunState.LEASED, True, None)
        assert run.events.filter(kind="cancel_requested").count() == 1

    def test_cancelling_a_finished_run_changes_nothing(self, project, version, owner):
        run = submit(project, version)
        succeed(claim(node(owner)))
        services.run_cancel(run=run)
        run.refresh_from_db()
        assert (run.state, run.cancel_requested) == (RunState.SUCCEEDED, False)
