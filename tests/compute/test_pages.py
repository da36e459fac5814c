"""The compute pages: nodes (owner only; token shown once; start commands and the Colab terms),
runs (visible exactly when their project is; cancel by members or the creator), and the
"Run this version" form on a notebook page (parameters parsed; bad ones answered 400)."""

import datetime as dt
import hashlib
import html
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone
from nbformat.v4 import new_code_cell, new_notebook, new_output

from apps.accounts.models import User
from apps.compute import agent_dist, services
from apps.compute.forms import parse_parameter
from apps.compute.models import Node, Run, RunState
from apps.projects import rendering
from apps.projects import services as project_services
from apps.projects.models import Project
from apps.projects.views import RENDER_CSP
from tests.factories import make_project, upload_notebook

TOKEN = re.compile(r'<pre class="secret">(rln_[A-Za-z0-9_-]+)</pre>')


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def browser(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def text(response) -> str:
    return html.unescape(response.content.decode())


def found(pattern: str, content: str, group: int = 0) -> str:
    match = re.search(pattern, content, re.S)
    assert match is not None, pattern
    return match.group(group)


def shown_token(response) -> str | None:
    found = TOKEN.search(response.content.decode())
    return found.group(1) if found else None


@pytest.fixture
def node(owner) -> Node:
    return services.node_register(owner=owner, name="workstation", max_concurrency=2).node


# --- nodes -----------------------------------------------------------------------------------------------
def test_node_pages_send_anonymous_visitors_to_log_in(node):
    client = browser(None)
    for url in ["/nodes/", "/nodes/new/", f"/nodes/{node.pk}/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert client.post(f"/nodes/{node.pk}/revoke/").status_code == 302
    node.refresh_from_db()
    assert node.revoked_at is None


def test_node_pages_are_owner_only(node, outsider):
    client = browser(outsider)
    assert client.get(f"/nodes/{node.pk}/").status_code == 404
    assert client.post(f"/nodes/{node.pk}/rotate-token/").status_code == 404
    assert client.post(f"/nodes/{node.pk}/revoke/").status_code == 404
    listing = client.get("/nodes/")
    assert listing.status_code == 200
    assert f"/nodes/{node.pk}/" not in text(listing)
    node.refresh_from_db()
    assert node.revoked_at is None


def test_registering_a_node_shows_its_token_once(owner, private_project):
    client = browser(owner)
    form = client.get("/nodes/new/")
    assert form.status_code == 200
    assert private_project.name in text(form)  # a project the owner is a member of

    response = client.post(
        "/nodes/new/",
        {"name": "gpu-box", "tags": "GPU, a100, ,gpu", "max_concurrency": "3", "projects": [private_project.pk]},
    )
    assert response.status_code == 200
    token = shown_token(response)
    assert token is not None
    assert response["Cache-Control"] == "no-store"
    node = Node.objects.get(owner=owner, name="gpu-box")
    assert services.node_authenticate(raw=token) == node
    assert node.tags == ["a100", "gpu"]
    assert node.max_concurrency == 3
    assert not node.shared
    assert list(node.projects.all()) == [private_project]
    # The commands right after registering carry the token itself.
    assert f"--token {token} --concurrency 3" in text(response)

    later = client.get(f"/nodes/{node.pk}/")
    assert later.status_code == 200
    assert token not in later.content.decode()
    assert shown_token(later) is None
    assert node.token_prefix in text(later)
    assert '--token "$REPROLAB_NODE_TOKEN"' in text(later)


def test_register_form_rejects_a_duplicate_name_and_foreign_projects(owner, node, outsider):
    foreign = make_project(outsider, slug="not-mine")
    client = browser(owner)
    duplicate = client.post("/nodes/new/", {"name": "workstation", "max_concurrency": "1"})
    assert duplicate.status_code == 400
    assert "You already have a node named “workstation”" in text(duplicate)
    assert "not-mine" not in text(client.get("/nodes/new/"))
    foreign_choice = client.post("/nodes/new/", {"name": "other", "max_concurrency": "1", "projects": [foreign.pk]})
    assert foreign_choice.status_code == 400
    assert not Node.objects.filter(name="other").exists()
    assert Node.objects.filter(owner=owner).count() == 1


def test_node_page_shows_install_and_colab_commands_and_the_colab_terms(owner, node):
    page = text(browser(owner).get(f"/nodes/{node.pk}/"))
    wheel = agent_dist.wheel_filename()
    assert f"pip install http://testserver/agent/{wheel}" in page
    assert 'reprolab-agent --server http://testserver --token "$REPROLAB_NODE_TOKEN" --concurrency 2' in page
    assert f"!pip install -q http://testserver/agent/{wheel}" in page
    assert "!reprolab-agent --server http://testserver --concurrency 2" in page
    assert 'getpass.getpass("ReproLab node token' in page
    assert "Colab's terms forbid unattended “distributed computing workers” on free runtimes" in page
    assert "paid Colab runtime" in page
    assert "attended session" in page
    assert "interrupt the cell" in page
    # The wheel the page names is the one the site serves.
    assert browser(None).get(f"/agent/{wheel}").status_code == 200


def test_rotating_and_revoking_a_token(owner, node):
    client = browser(owner)
    first = shown_token(client.post(f"/nodes/{node.pk}/rotate-token/"))
    assert first is not None
    assert services.node_authenticate(raw=first) == node
    second = shown_token(client.post(f"/nodes/{node.pk}/rotate-token/"))
    assert second is not None
    assert second != first
    assert services.node_authenticate(raw=first) is None  # the old token stops working
    assert services.node_authenticate(raw=second) == node
    assert client.get(f"/nodes/{node.pk}/rotate-token/").status_code == 405

    revoked = client.post(f"/nodes/{node.pk}/revoke/")
    assert revoked.status_code == 302
    assert revoked["Location"] == f"/nodes/{node.pk}/"
    assert services.node_authenticate(raw=second) is None
    page = text(client.get(f"/nodes/{node.pk}/"))
    assert 'id="revoked"' in page
    assert 'id="revoke"' not in page
    # A new token brings a revoked node back.
    third = shown_token(client.post(f"/nodes/{node.pk}/rotate-token/"))
    assert third is not None
    assert services.node_authenticate(raw=third) == node


def test_node_pages_show_capabilities_and_online_status(owner, node, settings):
    settings.REPROLAB_NODE_ACTIVE_SECONDS = 90
    gpu = {
        "index": 0,
        "name": "NVIDIA H200",
        "memory_total_mb": 143_771,
        "compute_capability": "9.0",
        "cuda_runtime_version": "12.4",
        "cuda_driver_version": "12.8",
        "cupy_version": "13.3.0",
    }
    services.node_seen(
        node=node,
        capabilities={
            "cpu_count": 16,
            "cpu_count_total": 16,
            "memory_total_mb": 131_072,
            "python_version": "3.11.9",
            "gpus": [gpu],
            "hostname": "<b>box</b>",
        },
    )
    offline = services.node_register(owner=owner, name="old-laptop").node
    Node.objects.filter(pk=offline.pk).update(last_seen_at=timezone.now() - dt.timedelta(minutes=10))
    services.node_register(owner=owner, name="fresh")

    client = browser(owner)
    listing = client.get("/nodes/").content.decode()
    rows = {name: found(rf">{name}</a>.*?</tr>", listing) for name in ["workstation", "old-laptop", "fresh"]}
    assert "node-online" in rows["workstation"]
    assert "NVIDIA H200 · 140.4 GiB · cc 9.0 · CUDA runtime 12.4, driver 12.8" in rows["workstation"]
    assert "16 CPUs · 128 GiB" in rows["workstation"]
    assert "node-offline" in rows["old-laptop"]
    assert "never connected" in rows["fresh"]

    page = client.get(f"/nodes/{node.pk}/").content.decode()
    assert "NVIDIA H200" in page
    assert "140.4 GiB" in page
    assert "9.0" in page
    assert "runtime 12.4, driver 12.8" in page
    assert "13.3.0" in page
    assert "&lt;b&gt;box&lt;/b&gt;" in page  # what an agent reports is escaped


# --- runs -------------------------------------------------------------------------------------------------
@pytest.fixture
def private_run(team, private_project) -> Run:
    upload = upload_notebook(private_project, team["owner"])
    return services.run_submit(
        project=private_project, user=team["member"], notebook_version=upload.version, parameters={"steps": 3}
    )


@pytest.fixture
def public_run(team, public_project) -> Run:
    upload = upload_notebook(public_project, team["owner"])
    return services.run_submit(project=public_project, user=team["owner"], notebook_version=upload.version)


@pytest.mark.parametrize("role", ["owner", "maintainer", "member", "viewer"])
def test_members_see_a_private_run(team, private_run, role):
    client = browser(team[role])
    response = client.get(f"/runs/{private_run.pk}/")
    assert response.status_code == 200
    page = text(response)
    assert f"Run #{private_run.pk}" in page
    assert 'id="run-state" data-state="queued"' in page
    assert "js/run.js" in page
    config = json.loads(found(r'<script id="run-config" type="application/json">(.*?)</script>', page, group=1))
    assert config["events_url"] == f"/api/v1/runs/{private_run.pk}/events/"
    assert config["ws_path"] == f"/ws/runs/{private_run.pk}/"
    assert config["output_url"] == f"/api/v1/runs/{private_run.pk}/output/"
    assert "steps" in page
    assert "alpha" in page
    assert f"#{private_run.pk}" in text(client.get("/runs/"))


@pytest.mark.parametrize("role", ["outsider", "anonymous"])
def test_outsiders_get_404_for_a_private_run(team, private_run, role):
    client = browser(team[role])
    assert client.get(f"/runs/{private_run.pk}/").status_code == 404
    assert f"/runs/{private_run.pk}/" not in text(client.get("/runs/"))


@pytest.mark.parametrize("role", ["outsider", "anonymous"])
def test_anyone_sees_a_public_run(team, public_run, role):
    client = browser(team[role])
    response = client.get(f"/runs/{public_run.pk}/")
    assert response.status_code == 200
    assert 'id="cancel-form"' not in text(response)
    assert f"/runs/{public_run.pk}/" in text(client.get("/runs/"))


def test_run_list_filters_by_state_and_project(team, private_run, public_run):
    client = browser(team["member"])
    assert f"/runs/{private_run.pk}/" in text(client.get("/runs/?project=secret-lab"))
    assert f"/runs/{public_run.pk}/" not in text(client.get("/runs/?project=secret-lab"))
    assert f"/runs/{private_run.pk}/" not in text(client.get("/runs/?state=succeeded"))
    assert client.get("/runs/?state=bogus&page=x").status_code == 200


def test_viewer_may_not_cancel_a_run(team, private_run):
    client = browser(team["viewer"])
    assert 'id="cancel-form"' not in text(client.get(f"/runs/{private_run.pk}/"))
    assert client.post(f"/runs/{private_run.pk}/cancel/").status_code == 403
    private_run.refresh_from_db()
    assert private_run.state == RunState.QUEUED


def test_outsider_and_anonymous_cannot_cancel(team, private_run):
    assert browser(team["outsider"]).post(f"/runs/{private_run.pk}/cancel/").status_code == 404
    assert browser(None).post(f"/runs/{private_run.pk}/cancel/").status_code == 302
    private_run.refresh_from_db()
    assert private_run.state == RunState.QUEUED


def test_member_cancels_a_queued_run(team, private_run):
    client = browser(team["maintainer"])  # not the creator; member rights are enough
    assert 'id="cancel-form"' in text(client.get(f"/runs/{private_run.pk}/"))
    response = client.post(f"/runs/{private_run.pk}/cancel/")
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{private_run.pk}/"
    private_run.refresh_from_db()
    assert private_run.state == RunState.CANCELLED
    page = text(client.get(f"/runs/{private_run.pk}/"))
    assert "cancelled" in page
    assert 'id="cancel-form"' not in page
    assert client.post(f"/runs/{private_run.pk}/cancel/").status_code == 302  # already ended: says so


def test_cancelling_a_running_run_asks_the_node(team, private_run):
    node = services.node_register(owner=team["owner"], name="n1", projects=[private_run.project]).node
    claim = services.run_claim(node=node)
    assert claim is not None
    assert claim.run.pk == private_run.pk
    response = browser(team["member"]).post(f"/runs/{private_run.pk}/cancel/", follow=True)
    assert "Asked the node to stop" in text(response)
    private_run.refresh_from_db()
    assert private_run.cancel_requested
    assert private_run.state == RunState.LEASED


# --- running a notebook from its page ------------------------------------------------------------------------
NOTEBOOK_PARAMETERS = "alpha = 0.5\nsteps = 10\nlabel = 'demo'\nflag = False\nsizes = [1, 2]"


@pytest.fixture
def version(team, private_project):
    return upload_notebook(private_project, team["owner"], parameters=NOTEBOOK_PARAMETERS).version


def run_url(project: Project, version) -> str:
    return f"/p/{project.slug}/-/run/{version.pk}/"


def test_notebook_page_offers_the_run_form_to_members(team, private_project, version):
    url = f"/p/{private_project.slug}/notebooks/analysis.ipynb"
    page = text(browser(team["member"]).get(url))
    assert f'action="{run_url(private_project, version)}"' in page
    assert 'name="param_alpha" value="0.5"' in page
    assert 'name="param_label" value="\'demo\'"' in page
    assert "Run this version" in page
    assert 'id="run-form"' not in text(browser(team["viewer"]).get(url))


def test_run_form_creates_a_run_with_parsed_parameters(team, private_project, version):
    client = browser(team["member"])
    response = client.post(
        run_url(private_project, version),
        {
            "param_alpha": "0.75",
            "param_steps": "10",  # unchanged: the notebook's default applies
            "param_label": "hello world",  # a str parameter takes plain text
            "param_flag": "true",
            "param_sizes": "[3, 4, 5]",
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert run.parameters == {"alpha": 0.75, "label": "hello world", "flag": True, "sizes": [3, 4, 5]}
    assert run.created_by == team["member"]
    assert run.notebook_version == version
    assert run.state == RunState.QUEUED
    page = text(client.get(response["Location"]))
    assert f"Run {run.pk} queued" in page
    assert '"hello world"' in page
    assert "(default)" in page  # steps


def test_run_form_with_datasets(team, private_project, version, outsider):
    dataset = project_services.dataset_create(project=private_project, name="prices", creator=team["owner"])
    dataset_version, _ = project_services.dataset_add_files(
        dataset=dataset,
        files=[project_services.IncomingFile(path="prices.csv", content=io.BytesIO(b"day,price\n1,3\n"))],
        uploader=team["owner"],
    )
    page = text(browser(team["member"]).get(f"/p/{private_project.slug}/notebooks/analysis.ipynb"))
    assert f'name="datasets" value="{dataset_version.pk}"' in page

    client = browser(team["member"])
    response = client.post(run_url(private_project, version), {"datasets": [dataset_version.pk]})
    assert response.status_code == 302
    run = Run.objects.get()
    assert list(run.input_datasets.all()) == [dataset_version]
    assert run.parameters == {}

    other = make_project(outsider, slug="elsewhere")
    foreign = project_services.dataset_create(project=other, name="foreign", creator=outsider)
    foreign_version, _ = project_services.dataset_add_files(
        dataset=foreign,
        files=[project_services.IncomingFile(path="x.csv", content=io.BytesIO(b"x\n"))],
        uploader=outsider,
    )
    rejected = client.post(run_url(private_project, version), {"datasets": [foreign_version.pk]})
    assert rejected.status_code == 400
    assert Run.objects.count() == 1


def test_run_form_rejects_bad_parameters_with_400_and_a_message(team, private_project, version):
    client = browser(team["member"])
    response = client.post(run_url(private_project, version), {"param_steps": "ten", "param_alpha": "[1"})
    assert response.status_code == 400
    page = text(response)
    assert "Could not start the run" in page
    assert "'steps' must be an integer (declared int), got str." in page
    assert "'alpha' must be a number (declared float), got str." in page
    assert 'name="param_steps" value="ten"' in page  # the form comes back with what was typed
    assert not Run.objects.exists()


def test_run_form_permissions(team, private_project, version):
    url = run_url(private_project, version)
    assert browser(team["viewer"]).post(url, {}).status_code == 403
    assert browser(team["outsider"]).post(url, {}).status_code == 404
    assert browser(None).post(url, {}).status_code == 302
    assert browser(team["member"]).get(url).status_code == 405
    other = make_project(team["owner"], slug="other-lab")
    assert browser(team["owner"]).post(run_url(other, version), {}).status_code == 404  # version of another project
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("raw", "type_name", "expected"),
    [
        ("0.75", "float", 0.75),
        ("10", "int", 10),
        ("true", "bool", True),
        ("True", "bool", True),  # papermill shows Python literals
        ("'demo'", "str", "demo"),
        ('"demo"', "str", "demo"),
        ("plain words", "str", "plain words"),
        ("42", "str", "42"),  # a str parameter keeps the text
        ("(1, 2)", "tuple", [1, 2]),
        ('{"a": 1}', "dict", {"a": 1}),
        ("None", "None", None),
        ("NaN", "float", "NaN"),  # not JSON: the service answers that it is not a number
        ("{1, 2}", "None", "{1, 2}"),
        ("ten", "int", "ten"),
    ],
)
def test_parse_parameter(raw, type_name, expected):
    assert parse_parameter(raw, type_name) == expected


def test_nav_links(owner):
    assert 'href="/nodes/"' in text(browser(owner).get("/"))
    anonymous = text(browser(None).get("/"))
    assert 'href="/nodes/"' not in anonymous
    assert 'href="/runs/"' in anonymous


# --- the executed notebook, rendered on the run page ----------------------------------------------------------
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def executed_notebook() -> bytes:
    """What an agent uploads: outputs with an image, rich HTML and a script that must not run."""
    cell = new_code_cell("plot()", execution_count=1)
    cell.outputs = [
        new_output("stream", name="stdout", text="fitted\n"),
        new_output("display_data", data={"image/png": PNG_1PX, "text/plain": "<Figure>"}),
        new_output(
            "execute_result",
            data={
                "text/html": "<table class='dataframe'><tr><td>0.75</td></tr></table><script>alert('PWNED')</script>"
            },
            execution_count=1,
        ),
    ]
    nb = new_notebook(cells=[cell])
    return nbformat.writes(nb).encode()


def finish_with_output(run: Run, output: bytes) -> Run:
    """Claim the run on a node of its project's owner and complete it with `output`, as an agent would."""
    owner = run.project.created_by
    assert owner is not None
    node = services.node_register(owner=owner, name="n-out", projects=[run.project]).node
    services.node_seen(node=node)
    claim = services.run_claim(node=node)
    assert claim is not None
    assert claim.run.pk == run.pk
    services.run_output_upload(
        run=run, lease_id=claim.lease_id, stream=io.BytesIO(output), sha256=hashlib.sha256(output).hexdigest()
    )
    return services.run_complete(run=run, lease_id=claim.lease_id, state=RunState.SUCCEEDED)


@pytest.fixture
def finished_run(private_run) -> Run:
    finish_with_output(private_run, executed_notebook())
    private_run.refresh_from_db()
    return private_run


@pytest.fixture
def fake_renderer(monkeypatch):
    calls: list[bytes] = []

    def fake(notebook_bytes: bytes) -> str:
        calls.append(notebook_bytes)
        return f"<!doctype html><html><body><p>render {len(calls)}</p></body></html>"

    monkeypatch.setattr(rendering, "_render_in_child", fake)
    return calls


def frames_of(page: str) -> list[str]:
    return re.findall(r"<iframe[^>]*>", page)


def test_run_page_frames_the_executed_notebook_in_a_sandbox(team, finished_run):
    page = text(browser(team["viewer"]).get(f"/runs/{finished_run.pk}/"))

    frames = frames_of(page)
    assert len(frames) == 1
    assert f'src="/runs/{finished_run.pk}/render/"' in frames[0]
    sandbox = found(r'sandbox="([^"]*)"', frames[0], group=1).split()
    assert "allow-scripts" in sandbox
    assert "allow-same-origin" not in sandbox
    assert 'id="cells"' in page  # beside the live cell view, not instead of it


def test_run_page_without_output_has_the_frame_hidden_and_empty(team, private_run):
    page = text(browser(team["owner"]).get(f"/runs/{private_run.pk}/"))

    frame = frames_of(page)[0]
    assert " src=" not in frame  # run.js sets it when the output arrives
    assert f'data-src="/runs/{private_run.pk}/render/"' in frame
    assert re.search(r'<section class="card render-card" id="executed-card"\s+hidden>', page)


def test_run_render_serves_the_sanitized_notebook_with_its_images_under_the_sandbox_csp(team, finished_run):
    response = browser(team["viewer"]).get(f"/runs/{finished_run.pk}/render/")

    body = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == RENDER_CSP
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert f'src="data:image/png;base64,{PNG_1PX}"' in body
    assert "<td>0.75</td>" in body
    assert "fitted" in body
    assert "PWNED" not in body


def test_run_render_is_cached_by_the_outputs_sha256(team, finished_run, fake_renderer):
    client = browser(team["owner"])
    first = client.get(f"/runs/{finished_run.pk}/render/")
    second = client.get(f"/runs/{finished_run.pk}/render/")

    assert len(fake_renderer) == 1
    assert second.content == first.content
    assert default_storage.exists(rendering._render_name(finished_run.output_sha256))


def test_run_render_counts_against_the_render_rate_limit(team, finished_run, fake_renderer, settings, monkeypatch):
    settings.REPROLAB_RENDERS_PER_MINUTE = 0
    monkeypatch.setattr(rendering.time, "time", lambda: 1_800_000_123.0)

    response = browser(team["owner"]).get(f"/runs/{finished_run.pk}/render/")

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert fake_renderer == []


@pytest.mark.parametrize("role", ["outsider", "anonymous"])
def test_outsiders_get_404_for_a_private_runs_render(team, finished_run, fake_renderer, role):
    response = browser(team[role]).get(f"/runs/{finished_run.pk}/render/")

    assert response.status_code == 404
    assert fake_renderer == []


def test_run_render_is_404_while_the_run_has_no_output(team, private_run, fake_renderer):
    assert browser(team["owner"]).get(f"/runs/{private_run.pk}/render/").status_code == 404
    assert fake_renderer == []


# --- durations --------------------------------------------------------------------------------------------------
def test_run_list_shows_seconds_for_a_run_shorter_than_a_minute(team, finished_run):
    started = timezone.now() - dt.timedelta(seconds=20)
    Run.objects.filter(pk=finished_run.pk).update(started_at=started, finished_at=started + dt.timedelta(seconds=3))

    page = text(browser(team["owner"]).get("/runs/"))

    row = found(rf'<tr data-run="{finished_run.pk}">.*?</tr>', page)
    assert "3 seconds" in row
    assert "minute" not in row
