"""What a node does with the runs it takes, on its page and in the node list: isolation (with a
warning when there is none), network, GPU sharing, warm kernels and per-run limits. Stored
capabilities come from agents old and new: any shape renders, escaped, as "unknown" at worst."""

import html
import re

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node

FULL = {
    "cpu_count": 8,
    "memory_total_mb": 32_768,
    "isolation": "bwrap",
    "network": True,
    "gpu_sharing": False,
    "warm_kernels": ["python3", "ir"],
    "limits": {"memory_mb": 4096, "cpu_seconds": 5400, "processes": 256, "output_mb": 100, "workdir_mb": 0},
    "gpus": [{"index": 1, "name": "NVIDIA H100", "memory_total_mb": 81_559, "compute_capability": "9.0"}],
}

MALFORMED = [
    pytest.param({"isolation": 5, "limits": "lots", "gpus": [1, "x"], "warm_kernels": {"a": 1}}, id="brief"),
    pytest.param({"isolation": ["bwrap"], "network": "yes", "gpu_sharing": 1, "gpus": {"0": {}}}, id="types"),
    pytest.param(
        {"limits": {"memory_mb": "4G", "cpu_seconds": -1, "processes": True, "output_mb": 1e300}}, id="limits"
    ),
    pytest.param(
        {"gpus": [{"index": True, "name": {"x": 1}, "memory_total_mb": "big"}], "gpu_sharing": True}, id="gpu"
    ),
    pytest.param({"warm_kernels": [None, 3, "", "python3"], "platform": "linux", "cpu_count": [2]}, id="lists"),
    pytest.param(["not", "a", "dict"], id="list"),
    pytest.param("capabilities", id="text"),
]


@pytest.fixture
def node(owner: User) -> Node:
    return services.node_register(owner=owner, name="workstation").node


def report(node: Node, capabilities: object) -> None:
    """Store capabilities as they are, past the hello's validation (rows from older agents)."""
    Node.objects.filter(pk=node.pk).update(capabilities=capabilities, last_seen_at=timezone.now())


def page(user: User, path: str) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200
    return response.content.decode()


def part(content: str, pattern: str) -> str:
    match = re.search(pattern, content, re.S)
    assert match is not None, pattern
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(0)))


def words(text: str) -> str:
    return " ".join(text.split())


def capabilities_card(owner: User, node: Node) -> str:
    return words(part(page(owner, f"/nodes/{node.pk}/"), r'<section class="card" id="capabilities">.*?</section>'))


def list_row(owner: User, node: Node) -> str:
    return words(part(page(owner, "/nodes/"), rf'<tr data-node="{node.pk}">.*?</tr>'))


def test_node_page_shows_how_runs_are_isolated_and_limited(owner, node):
    report(node, FULL)

    card = capabilities_card(owner, node)

    assert "Isolation sandboxed: bubblewrap namespaces, no network unless allowed" in card
    assert "Network allowed for runs that ask for it" in card
    assert "Warm kernels python3, ir" in card
    assert "Memory 4 GiB" in card
    assert "CPU time 1 h 30 min" in card
    assert "Processes 256" in card
    assert "Output 100 MiB" in card
    assert "Working folder no limit" in card
    assert "Sharing: one run per GPU" in card
    assert "#1 NVIDIA H100" in card
    assert "not isolated" not in card


def test_node_list_shows_the_same_compactly(owner, node):
    report(node, FULL)

    row = list_row(owner, node)

    assert "#1 NVIDIA H100 · 79.6 GiB · cc 9.0" in row
    assert "one run per GPU" in row
    assert "sandboxed · network on request · warm python3, ir" in row
    assert "limits: 4 GiB memory, 1 h 30 min CPU time, 256 processes, 100 MiB output" in row


@pytest.mark.parametrize(
    ("level", "words_"),
    [("uid", "per-run user and limits"), ("none", "none: runs can read what the agent's user can")],
)
def test_node_page_says_each_isolation_level_in_words(owner, node, level, words_):
    report(node, {**FULL, "isolation": level, "network": False})

    card = capabilities_card(owner, node)

    assert f"Isolation {words_}" in card
    assert "Network not allowed" in card


def test_a_node_that_does_not_isolate_its_runs_is_flagged(owner, node, team):
    report(node, {**FULL, "isolation": "none"})
    Node.objects.filter(pk=node.pk).update(shared=True)
    User.objects.filter(pk=owner.pk).update(is_staff=True)

    detail = page(owner, f"/nodes/{node.pk}/")
    assert 'id="isolation" class="isolation isolation-none"' in detail
    assert "its node token included" in part(detail, r'<p class="callout warn small" id="isolation-warning">.*?</p>')
    assert '<span class="isolation isolation-none">not isolated</span>' in page(owner, "/nodes/")
    # Someone whose runs it may take sees it too, in "Other nodes that may take your runs".
    serving = part(page(team["member"], "/nodes/"), r'<section class="card" id="serving">.*?</section>')
    assert "not isolated" in serving


def test_a_sandboxed_node_has_no_warning(owner, node):
    report(node, FULL)

    assert 'id="isolation-warning"' not in page(owner, f"/nodes/{node.pk}/")


def test_an_older_agents_report_shows_unknown(owner, node):
    report(node, {"cpu_count": 4, "memory_total_mb": 8192, "gpus": []})

    card = capabilities_card(owner, node)

    assert "Isolation unknown (not reported by this agent)" in card
    assert "Network unknown" in card
    assert "Warm kernels unknown" in card
    assert "Limits unknown" in card
    assert "Sharing" not in card  # no GPU: nothing to share
    assert "isolation unknown" in list_row(owner, node)


def test_a_node_without_limits_says_so(owner, node):
    report(node, {**FULL, "limits": {"memory_mb": 0}, "warm_kernels": []})

    card = capabilities_card(owner, node)

    assert "Limits none" in card
    assert "Warm kernels none" in card
    assert "limits:" not in list_row(owner, node)


@pytest.mark.parametrize("capabilities", MALFORMED)
def test_node_pages_survive_malformed_capabilities(owner, node, capabilities):
    report(node, capabilities)

    card = capabilities_card(owner, node)

    assert "Isolation unknown" in card
    assert "Traceback" not in card
    list_row(owner, node)  # renders


def test_malformed_limits_and_gpus_read_as_unknown(owner, node):
    report(node, {"limits": {"memory_mb": "4G", "cpu_seconds": -1, "processes": 12}, "gpus": [1, "x", {"name": 7}]})

    card = capabilities_card(owner, node)

    assert "Memory unknown" in card
    assert "CPU time unknown" in card
    assert "Processes 12" in card
    assert "GPUs 7 Memory ? Compute capability ?" in card  # the one dict among them, no index


def test_what_an_agent_reports_is_escaped(owner, node):
    hostile = "<img src=x onerror=alert(1)>"
    report(node, {**FULL, "warm_kernels": [hostile], "gpus": [{"name": hostile, "index": hostile}]})

    for content in (page(owner, f"/nodes/{node.pk}/"), page(owner, "/nodes/")):
        assert "<img src=x" not in content
        assert "&lt;img src=x onerror=alert(1)&gt;" in content
