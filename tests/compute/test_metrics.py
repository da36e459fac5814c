"""Platform metrics: the figures computed from runs with known timestamps, their scoping to the
requester (JSON at /api/v1/metrics/), and the Prometheus exposition at /metrics with its access
rules (open in the embedded mode; otherwise staff or the metrics token, anyone else 404)."""

import datetime as dt
import math
import re
import sys

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.compute import metrics, services
from apps.compute.models import Node, Run, RunState
from apps.projects.models import NotebookVersion, Project

from ..factories import make_project, make_user, upload_notebook

pytestmark = pytest.mark.django_db

NOW = timezone.now()
TOKEN = "metrics-scraper-secret-0123456789"


@pytest.fixture(autouse=True)
def _now_is_this_tests_start(monkeypatch):
    """NOW is when each test starts, not when the module was imported: the API computes with
    the real clock, and a suite that runs long before reaching these tests would otherwise find
    the nodes "seen 1 s ago" long gone (that made these tests depend on test order)."""
    monkeypatch.setattr(sys.modules[__name__], "NOW", timezone.now())


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


@pytest.fixture
def project(owner: User) -> Project:
    return make_project(owner, slug="lab", visibility="private")


@pytest.fixture
def version(project: Project, owner: User) -> NotebookVersion:
    return upload_notebook(project, owner).version


def make_run(
    project: Project,
    version: NotebookVersion,
    state: str = RunState.QUEUED,
    *,
    created: float | None = None,
    queued_for: float | None = None,
    ran_for: float | None = None,
    finished: float = 60,
    node: Node | None = None,
) -> Run:
    """A run in `state`. Finished runs end `finished` seconds ago after running `ran_for`
    seconds, having waited `queued_for` seconds in the queue (None: it never started)."""
    assert project.created_by is not None
    run = services.run_submit(project=project, user=project.created_by, notebook_version=version)
    changes: dict = {"state": state, "node": node}
    if created is not None:
        changes["created_at"] = ago(created)
    if state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST):
        finished_at = ago(finished)
        started_at = finished_at - dt.timedelta(seconds=ran_for) if ran_for is not None else None
        changes["finished_at"] = finished_at
        changes["started_at"] = started_at
        if queued_for is not None:
            assert started_at is not None
            changes["created_at"] = started_at - dt.timedelta(seconds=queued_for)
    Run.objects.filter(pk=run.pk).update(**changes)
    run.refresh_from_db()
    return run


def make_node(owner: User, name: str = "box", *, seen: float | None = 1, **kwargs) -> Node:
    node = services.node_register(owner=owner, name=name, **kwargs).node
    if seen is not None:
        Node.objects.filter(pk=node.pk).update(last_seen_at=ago(seen))
        node.refresh_from_db()
    return node


# --- percentiles --------------------------------------------------------------------------------------
class TestPercentile:
    def test_linear_interpolation_between_closest_ranks(self):
        values = [40, 10, 30, 20, 100]
        assert metrics.percentile(values, 0.5) == 30
        assert metrics.percentile(values, 0.95) == pytest.approx(88)  # 40 + 0.8 * (100 - 40)
        assert metrics.percentile(values, 0.0) == 10
        assert metrics.percentile(values, 1.0) == 100
        assert metrics.percentile([1, 2], 0.5) == 1.5

    def test_one_value_and_none(self):
        assert metrics.percentile([7.5], 0.95) == 7.5
        assert metrics.percentile([], 0.5) is None

    @pytest.mark.parametrize("fraction", [-0.1, 1.5])
    def test_the_fraction_must_be_within_0_and_1(self, fraction):
        with pytest.raises(ValueError, match="fraction"):
            metrics.percentile([1], fraction)


# --- the figures -----------------------------------------------------------------------------------------
class TestFigures:
    def test_runs_by_state_lists_every_state(self, project, version):
        make_run(project, version)
        make_run(project, version)
        make_run(project, version, RunState.RUNNING)
        m = metrics.site_metrics()
        assert m.runs_by_state == {
            "queued": 2,
            "leased": 0,
            "running": 1,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
            "lost": 0,
        }
        assert m.runs_total == 3

    def test_success_rate_over_succeeded_failed_and_lost(self, project, version):
        assert metrics.site_metrics().success_rate is None  # nothing at all
        make_run(project, version, RunState.CANCELLED)
        make_run(project, version)
        assert metrics.site_metrics().success_rate is None  # cancelled runs say nothing about success
        for state in [RunState.SUCCEEDED] * 3 + [RunState.FAILED, RunState.LOST]:
            make_run(project, version, state, queued_for=1, ran_for=1)
        assert metrics.site_metrics().success_rate == pytest.approx(0.6)

    @pytest.mark.parametrize("in_database", [True, False], ids=["database", "python"])
    def test_queue_wait_and_run_time_percentiles(self, project, version, in_database):
        if in_database and connection.vendor != "postgresql":
            pytest.skip("percentile_cont needs PostgreSQL")
        for queued_for, ran_for in [(10, 60), (20, 120), (30, 180), (40, 240), (100, 3000)]:
            make_run(project, version, RunState.SUCCEEDED, queued_for=queued_for, ran_for=ran_for)
        # Outside the percentiles: finished two days ago, never started, or not finished.
        make_run(project, version, RunState.SUCCEEDED, queued_for=9999, ran_for=9999, finished=2 * 86400)
        make_run(project, version, RunState.CANCELLED, finished=30)
        make_run(project, version, RunState.RUNNING)
        recent = Run.objects.filter(finished_at__gte=NOW - dt.timedelta(days=1))
        wait = metrics.duration_stats(recent, "created_at", "started_at", in_database=in_database)
        run_time = metrics.duration_stats(recent, "started_at", "finished_at", in_database=in_database)
        assert wait.count == run_time.count == 5
        assert wait.quantiles[0.5] == pytest.approx(30)
        assert wait.quantiles[0.95] == pytest.approx(88)
        assert run_time.quantiles[0.5] == pytest.approx(180)
        assert run_time.quantiles[0.95] == pytest.approx(240 + 0.8 * 2760)

    def test_the_window_limits_the_percentiles(self, project, version, settings):
        settings.REPROLAB_METRICS_WINDOW_SECONDS = 3600
        make_run(project, version, RunState.SUCCEEDED, queued_for=5, ran_for=50, finished=600)
        make_run(project, version, RunState.FAILED, queued_for=500, ran_for=5000, finished=7200)
        m = metrics.site_metrics(now=NOW)
        assert m.window_seconds == 3600
        assert (m.queue_wait.count, m.queue_wait.quantiles[0.5]) == (1, pytest.approx(5))
        assert (m.run_duration.count, m.run_duration.quantiles[0.95]) == (1, pytest.approx(50))
        assert m.runs_by_state["failed"] == 1  # counts are not windowed

    def test_no_finished_runs_means_no_percentiles(self, project, version):
        make_run(project, version)
        m = metrics.site_metrics()
        assert m.queue_wait.count == 0
        assert m.queue_wait.quantiles == {0.5: None, 0.95: None}
        assert m.run_duration.quantiles == {0.5: None, 0.95: None}

    def test_active_nodes_and_utilization(self, project, version, owner, settings):
        settings.REPROLAB_NODE_ACTIVE_SECONDS = 60
        busy = make_node(owner, "busy", max_concurrency=4)
        idle = make_node(owner, "idle", seen=600, max_concurrency=2)
        never = make_node(owner, "never", seen=None)
        gone = make_node(owner, "gone")
        services.node_revoke(node=gone)
        make_run(project, version, RunState.LEASED, node=busy)
        make_run(project, version, RunState.RUNNING, node=busy)
        make_run(project, version, RunState.SUCCEEDED, queued_for=1, ran_for=1, node=busy)  # not running
        make_run(project, version, RunState.RUNNING, node=gone)
        m = metrics.site_metrics(now=NOW)
        assert m.active_nodes == 1
        loads = {n.name: n for n in m.nodes}
        assert set(loads) == {"busy", "idle", "never"}  # revoked nodes are left out
        assert (loads["busy"].running, loads["busy"].max_concurrency, loads["busy"].utilization) == (2, 4, 0.5)
        assert loads["busy"].active
        assert not loads["idle"].active
        assert not loads["never"].active
        assert loads["idle"].utilization == 0.0
        assert loads["busy"].as_dict() == {
            "id": busy.pk,
            "name": "busy",
            "owner": owner.username,
            "running": 2,
            "max_concurrency": 4,
            "utilization": 0.5,
            "active": True,
        }
        assert {idle.pk, never.pk} <= {n.id for n in m.nodes}


# --- the JSON API and its scope ------------------------------------------------------------------------------
class TestJsonApi:
    def test_anonymous_is_refused(self, api):
        assert api.get("/api/v1/metrics/").status_code == 401

    def test_the_shape(self, client_for, owner, project, version):
        make_run(project, version, RunState.SUCCEEDED, queued_for=10, ran_for=20)
        make_node(owner, "mine", max_concurrency=2)
        body = client_for(owner).get("/api/v1/metrics/").json()
        assert body["scope"] == "user"
        assert body["window_seconds"] == 86400
        assert body["runs"]["by_state"]["succeeded"] == 1
        assert body["runs"]["total"] == 1
        assert body["runs"]["success_rate"] == 1.0
        assert body["queue_wait_seconds"] == {"count": 1, "p50": pytest.approx(10), "p95": pytest.approx(10)}
        assert body["run_seconds"] == {"count": 1, "p50": pytest.approx(20), "p95": pytest.approx(20)}
        assert body["nodes"]["active"] == 1
        assert body["nodes"]["registered"] == 1
        assert body["nodes"]["utilization"][0]["name"] == "mine"

    def test_an_outsider_sees_neither_private_runs_nor_others_nodes(self, client_for, owner, project, version):
        make_run(project, version, RunState.SUCCEEDED, queued_for=10, ran_for=20)
        make_run(project, version, RunState.FAILED, queued_for=10, ran_for=20)
        make_node(owner, "olivias")
        stranger = make_user("sam")
        public = make_project(stranger, slug="open", visibility="public")
        make_run(public, upload_notebook(public, stranger).version)
        make_node(stranger, "sams")

        body = client_for(make_user("nosy")).get("/api/v1/metrics/").json()
        assert body["runs"]["total"] == 1  # the public project's run only
        assert body["runs"]["by_state"]["queued"] == 1
        assert body["runs"]["by_state"]["succeeded"] == body["runs"]["by_state"]["failed"] == 0
        assert body["runs"]["success_rate"] is None
        assert body["queue_wait_seconds"]["count"] == 0
        assert body["nodes"] == {"active": 0, "registered": 0, "utilization": []}

        mine = client_for(stranger).get("/api/v1/metrics/").json()
        assert [n["name"] for n in mine["nodes"]["utilization"]] == ["sams"]
        assert mine["runs"]["total"] == 1

        members = client_for(owner).get("/api/v1/metrics/").json()
        assert members["runs"]["total"] == 3
        assert members["runs"]["success_rate"] == 0.5
        assert [n["name"] for n in members["nodes"]["utilization"]] == ["olivias"]

    def test_staff_see_the_whole_site(self, client_for, owner, project, version):
        make_run(project, version)
        make_node(owner, "olivias")
        staff = make_user("root")
        User.objects.filter(pk=staff.pk).update(is_staff=True)
        body = client_for(staff).get("/api/v1/metrics/").json()
        assert body["scope"] == "site"
        assert body["runs"]["total"] == 1
        assert [n["name"] for n in body["nodes"]["utilization"]] == ["olivias"]


# --- Prometheus -----------------------------------------------------------------------------------------------
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$')


def parse(text: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, float]]]:
    """A strict reading of the text format: every sample belongs to a family announced with
    # HELP and # TYPE before it. Returns {name: (type, help)} and [(name, labels, value)]."""
    families: dict[str, list[str]] = {}
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            families.setdefault(name, []).append(help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in {"gauge", "counter", "summary", "histogram", "untyped"}
            assert name in families, f"TYPE before HELP for {name}"
            families[name].append(kind)
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.group(1), match.group(2) or "", match.group(3)
            assert name in families, f"{name} has no HELP/TYPE"
            samples.append((name, labels, float(value)))
    return {name: (info[1], info[0]) for name, info in families.items()}, samples


def value(samples, name: str, labels: str = "") -> float:
    found = [v for n, lab, v in samples if n == name and lab == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


class TestPrometheus:
    def test_the_exposition(self, client, owner, project, version):
        for wait, duration in [(10, 60), (20, 120), (30, 180)]:
            make_run(project, version, RunState.SUCCEEDED, queued_for=wait, ran_for=duration)
        make_run(project, version, RunState.FAILED, queued_for=40, ran_for=240)
        box = make_node(owner, "box", max_concurrency=4)
        make_run(project, version, RunState.RUNNING, node=box)
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")
        families, samples = parse(response.content.decode())
        assert families["reprolab_runs"][0] == "gauge"
        assert families["reprolab_node_utilization"] == (
            "gauge",
            "Leased and running runs over max_concurrency, per node.",
        )
        for state in RunState:
            expected = {"succeeded": 3, "failed": 1, "running": 1}.get(state.value, 0)
            assert value(samples, "reprolab_runs", f'{{state="{state.value}"}}') == expected
        assert value(samples, "reprolab_run_success_ratio") == 0.75
        assert value(samples, "reprolab_queue_wait_seconds", '{quantile="0.5"}') == pytest.approx(25)
        assert value(samples, "reprolab_queue_wait_seconds", '{quantile="0.95"}') == pytest.approx(38.5)
        assert value(samples, "reprolab_run_duration_seconds", '{quantile="0.5"}') == pytest.approx(150)
        assert value(samples, "reprolab_run_duration_seconds", '{quantile="0.95"}') == pytest.approx(231)
        assert value(samples, "reprolab_queue_wait_seconds_runs") == 4
        assert value(samples, "reprolab_nodes_active") == 1
        assert value(samples, "reprolab_node_utilization", f'{{node="box",node_id="{box.pk}"}}') == 0.25

    def test_no_data_is_nan_not_an_error(self, client):
        _, samples = parse(client.get("/metrics").content.decode())
        assert math.isnan(value(samples, "reprolab_run_success_ratio"))
        assert math.isnan(value(samples, "reprolab_queue_wait_seconds", '{quantile="0.5"}'))
        assert value(samples, "reprolab_nodes_active") == 0
        assert not [s for s in samples if s[0] == "reprolab_node_utilization"]

    def test_label_values_are_escaped(self, client, owner):
        node = make_node(owner, 'gpu "big" \\ box\nTwo')
        text = client.get("/metrics").content.decode()
        assert f'reprolab_node_utilization{{node="gpu \\"big\\" \\\\ box\\nTwo",node_id="{node.pk}"}} 0.0' in text
        parse(text)  # still one sample per line

    def test_escaping_and_values(self):
        assert metrics.escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
        assert metrics.format_value(None) == "NaN"
        assert metrics.format_value(float("nan")) == "NaN"
        assert metrics.format_value(float("inf")) == "+Inf"
        assert metrics.format_value(3) == "3"
        assert metrics.format_value(0.25) == "0.25"

    def test_the_json_view_and_the_text_view_agree(self, client, client_for, owner, project, version):
        make_run(project, version, RunState.SUCCEEDED, queued_for=12, ran_for=34)
        User.objects.filter(pk=owner.pk).update(is_staff=True)
        body = client_for(owner).get("/api/v1/metrics/").json()
        _, samples = parse(client.get("/metrics").content.decode())
        assert value(samples, "reprolab_queue_wait_seconds", '{quantile="0.5"}') == pytest.approx(
            body["queue_wait_seconds"]["p50"]
        )
        assert value(samples, "reprolab_run_duration_seconds", '{quantile="0.95"}') == pytest.approx(
            body["run_seconds"]["p95"]
        )


class TestPrometheusAccess:
    @pytest.fixture
    def locked_down(self, settings):
        """The production posture: no DEBUG, no embedded mode."""
        settings.DEBUG = False
        settings.REPROLAB_DEMO_ALLOWED = False
        settings.REPROLAB_METRICS_TOKEN = TOKEN
        return settings

    def test_open_in_the_embedded_mode(self, settings):
        settings.DEBUG = False
        settings.REPROLAB_DEMO_ALLOWED = True
        assert Client().get("/metrics").status_code == 200

    def test_open_under_debug(self, settings):
        settings.DEBUG = True
        settings.REPROLAB_DEMO_ALLOWED = False
        assert Client().get("/metrics").status_code == 200

    def test_anonymous_gets_404(self, locked_down):
        response = Client().get("/metrics")
        assert response.status_code == 404
        assert b"reprolab_" not in response.content

    def test_a_logged_in_user_who_is_not_staff_gets_404(self, locked_down, owner):
        client = Client()
        client.force_login(owner)
        assert client.get("/metrics").status_code == 404

    def test_staff_by_session(self, locked_down):
        staff = make_user("root")
        User.objects.filter(pk=staff.pk).update(is_staff=True)
        client = Client()
        client.force_login(staff)
        response = client.get("/metrics")
        assert response.status_code == 200
        assert b"reprolab_runs" in response.content

    def test_the_metrics_token(self, locked_down):
        assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
        assert Client().get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200

    @pytest.mark.parametrize(
        "header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", "Bearer é"]
    )
    def test_a_wrong_token_gets_404(self, locked_down, header):
        assert Client().get("/metrics", HTTP_AUTHORIZATION=header).status_code == 404

    def test_no_token_configured_accepts_no_token(self, locked_down):
        locked_down.REPROLAB_METRICS_TOKEN = ""
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer x").status_code == 404
        del locked_down.REPROLAB_METRICS_TOKEN  # unset altogether: the same
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer x").status_code == 404

    def test_a_user_api_token_is_not_the_metrics_token(self, locked_down, owner):
        from ..factories import make_token

        assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {make_token(owner)}").status_code == 404

    def test_only_reads_and_a_refused_post_is_404_too(self, locked_down):
        assert Client(enforce_csrf_checks=True).post("/metrics").status_code == 404
        assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
        assert Client().head("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
