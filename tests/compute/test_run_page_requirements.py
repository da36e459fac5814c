"""The run page says what the run asked of its node (older rows have only tags, gpu and
min_gpu_memory_mb), and holds the live GPU section hidden until a resources event reports GPUs."""

import html
import re
from pathlib import Path

import pytest
from django.test import Client

from apps.compute import services
from apps.compute.models import Run
from tests.factories import upload_notebook


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def run(team, private_project) -> Run:
    version = upload_notebook(private_project, team["owner"]).version
    return services.run_submit(project=private_project, user=team["member"], notebook_version=version)


def run_page(run: Run, user) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def requirements_shown(run: Run, user) -> str | None:
    match = re.search(r'<dd id="run-requirements">(.*?)</dd>', run_page(run, user), re.S)
    if match is None:
        return None
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def require(run: Run, requirements: object) -> None:
    Run.objects.filter(pk=run.pk).update(requirements=requirements)


def test_run_page_says_the_runs_requirements_in_words(team, run):
    require(
        run,
        {
            "tags": ["big-memory", "lab"],
            "gpu": True,
            "gpus": 2,
            "min_gpu_memory_mb": 16000,
            "isolation": "sandbox",
            "network": True,
        },
    )

    shown = requirements_shown(run, team["viewer"])

    assert shown is not None
    assert "a node tagged big-memory lab" in shown
    assert "2 GPUs of its own with at least 15.6 GiB of memory each" in shown
    assert "a sandboxed node (bubblewrap namespaces)" in shown
    assert "network access (only nodes that allow it)" in shown


def test_an_older_runs_requirements_read_as_before(team, run):
    require(run, {"tags": [], "gpu": True, "min_gpu_memory_mb": 8192})

    # Read as the scheduler reads it: `gpu` means one GPU for the run.
    assert requirements_shown(run, team["member"]) == "a GPU of its own with at least 8 GiB of memory"


@pytest.mark.parametrize(
    ("requirements", "shown"),
    [
        ({"gpus": 1}, "a GPU of its own"),
        ({"isolation": "limits"}, "a node with a per-run user and limits"),
        ({"isolation": "vm"}, "isolation “vm” (unknown to this site)"),
    ],
)
def test_each_requirement_in_words(team, run, requirements, shown):
    require(run, requirements)

    assert requirements_shown(run, team["member"]) == shown


@pytest.mark.parametrize(
    "requirements",
    [
        {"tags": [], "gpu": False, "min_gpu_memory_mb": 0},  # what run_submit stores for "anything"
        {"isolation": "none", "network": False, "gpus": 0},
        {},
    ],
)
def test_a_run_that_requires_nothing_shows_no_requirements(team, run, requirements):
    require(run, requirements)

    assert requirements_shown(run, team["member"]) is None


@pytest.mark.parametrize(
    "requirements",
    [
        {"tags": "gpu", "gpu": "yes", "gpus": "two", "min_gpu_memory_mb": [1], "isolation": ["sandbox"], "network": 1},
        {"gpus": True, "min_gpu_memory_mb": -5, "isolation": {"a": 1}},
        ["gpu"],
        "gpu",
    ],
)
def test_run_page_survives_malformed_requirements(team, run, requirements):
    require(run, requirements)

    shown = requirements_shown(run, team["member"])

    assert shown is None or "unknown to this site" in shown


def test_requirements_are_escaped(team, run):
    require(run, {"tags": ["<b>bold</b>"], "isolation": "<i>x</i>"})

    content = run_page(run, team["member"])

    assert "<b>bold</b>" not in content
    assert "&lt;b&gt;bold&lt;/b&gt;" in content
    assert "<i>x</i>" not in content


def test_the_gpu_section_starts_hidden_and_empty(team, run):
    content = run_page(run, team["member"])

    assert '<dt id="run-gpus-label" hidden>GPUs</dt>' in content
    assert '<dd id="run-gpus" hidden><ul class="gpu-uses" id="run-gpu-list"></ul></dd>' in content
