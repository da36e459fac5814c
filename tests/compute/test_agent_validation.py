"""What agents send is checked before it is stored: capabilities (hello), event batches, output
and artifact uploads, environment snapshots. A refusal is a 4xx naming the field and stores
nothing: no row, no blob. What a real agent sends (reprolab_agent.probe and .environment) keeps
being accepted."""

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from reprolab_agent.environment import capture
from reprolab_agent.probe import probe_capabilities
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node, Run, RunArtifact, RunEvent
from apps.core.hashing import blob_for_row, blob_name
from apps.projects.models import Project
from apps.reproducibility.models import EnvironmentSnapshot
from tests.factories import notebook_bytes, upload_notebook

pytestmark = pytest.mark.django_db

STALE_LEASE = "00000000-0000-0000-0000-000000000000"
BEYOND = 2**70


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """A private MEDIA_ROOT: the blobs a test stores are the only ones there."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def blobs() -> set[Path]:
    root = Path(django_settings.MEDIA_ROOT) / "blobs"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def error_detail(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.content
    detail = response.json()["detail"]
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


@pytest.fixture
def claim(owner: User, private_project: Project, registered: services.RegisteredNode) -> services.Claim:
    version = upload_notebook(private_project, owner).version
    services.run_submit(project=private_project, user=owner, notebook_version=version)
    services.node_seen(node=registered.node)
    claimed = services.run_claim(node=registered.node)
    assert claimed is not None
    return claimed


@pytest.fixture
def run_client(claim: services.Claim) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {claim.run_token}")
    return client


# --- hello: capabilities --------------------------------------------------------------------------
def hello(agent: APIClient, capabilities: Any):
    return agent.post("/api/v1/agent/hello/", {"capabilities": capabilities}, format="json")


def test_hello_accepts_and_stores_what_the_real_probe_reports(agent, registered):
    capabilities = probe_capabilities()

    response = hello(agent, capabilities)

    assert response.status_code == 200, response.content
    assert Node.objects.get(pk=registered.node.pk).capabilities == json.loads(json.dumps(capabilities))


def test_hello_accepts_a_gpu_node_as_the_probe_reports_it(agent, registered):
    gpu = {
        "index": 0,
        "name": "NVIDIA H200",
        "memory_total_mb": 143771,
        "compute_capability": "9.0",
        "multiprocessor_count": 132,
        "cuda_runtime_version": "12.4",
        "cuda_driver_version": "12.6",
        "cupy_version": "13.3.0",
    }
    capabilities = {**probe_capabilities(), "gpus": [gpu, {**gpu, "index": 1}]}

    assert hello(agent, capabilities).status_code == 200
    assert Node.objects.get(pk=registered.node.pk).gpus[1]["memory_total_mb"] == 143771


def test_hello_keeps_keys_a_newer_agent_adds(agent, registered):
    capabilities = {**probe_capabilities(), "sandbox": {"kind": "bubblewrap", "network": False}}

    assert hello(agent, capabilities).status_code == 200
    assert Node.objects.get(pk=registered.node.pk).capabilities["sandbox"] == {"kind": "bubblewrap", "network": False}


def test_hello_accepts_and_stores_how_the_node_runs_its_runs(agent, registered):
    settings_of_node = {
        "isolation": "bwrap",
        "network": True,
        "gpu_sharing": False,
        "warm_kernels": ["python3", "ir"],
        "limits": {"memory_mb": 98304, "cpu_seconds": 0, "processes": 512, "output_mb": 64, "workdir_mb": 10240},
        "gpus": [{"index": 0, "memory_total_mb": 81559}, {"index": 1, "memory_total_mb": 81559}],
    }
    capabilities = {**probe_capabilities(), **settings_of_node}

    assert hello(agent, capabilities).status_code == 200
    stored = Node.objects.get(pk=registered.node.pk).capabilities
    assert {key: stored[key] for key in settings_of_node} == settings_of_node


def test_hello_keeps_limits_a_newer_agent_adds(agent, registered):
    assert hello(agent, {"limits": {"memory_mb": 1024, "gpu_seconds": 60}}).status_code == 200
    assert Node.objects.get(pk=registered.node.pk).capabilities["limits"] == {"memory_mb": 1024, "gpu_seconds": 60}


@pytest.mark.parametrize(
    ("capabilities", "words"),
    [
        pytest.param({"isolation": "vm"}, "isolation", id="isolation-unknown"),
        pytest.param({"isolation": "sandbox"}, "isolation", id="isolation-a-runs-word"),
        pytest.param({"network": "maybe"}, "network", id="network-not-a-boolean"),
        pytest.param({"gpu_sharing": [True]}, "gpu_sharing", id="sharing-not-a-boolean"),
        pytest.param({"warm_kernels": "python3"}, "warm_kernels", id="kernels-not-a-list"),
        pytest.param({"warm_kernels": ["python3"] * 17}, "warm_kernels", id="too-many-kernels"),
        pytest.param({"warm_kernels": ["k" * 65]}, "warm_kernels", id="kernel-name-too-long"),
        pytest.param({"warm_kernels": [""]}, "warm_kernels", id="kernel-name-empty"),
        pytest.param({"limits": "none"}, "limits", id="limits-not-an-object"),
        pytest.param({"limits": {"memory_mb": -1}}, "memory_mb", id="limit-negative"),
        pytest.param({"limits": {"processes": 2**31}}, "processes", id="limit-past-range"),
        pytest.param({"limits": {"cpu_seconds": "1h"}}, "cpu_seconds", id="limit-not-a-number"),
        pytest.param({"limits": {"workdir_mb": True}}, "workdir_mb", id="limit-a-boolean"),
        pytest.param({"gpus": [{"index": "first"}]}, "index", id="gpu-index-not-a-number"),
        pytest.param({"gpus": [{"index": -1}]}, "index", id="gpu-index-negative"),
        pytest.param(
            {"gpus": [{"memory_total_mb": "lots"}]}, "memory_total_mb: a valid integer", id="memory-not-a-number"
        ),
        pytest.param(
            {"gpus": [{"memory_mb": BEYOND}]}, "memory_mb: ensure this value is less than", id="memory-past-range"
        ),
        pytest.param({"gpus": [{"memory_total_mb": -1}]}, "memory_total_mb", id="memory-negative"),
        pytest.param({"gpus": {"name": "H200"}}, "gpus", id="gpus-not-a-list"),
        pytest.param({"gpus": ["H200"]}, "gpus", id="gpu-not-an-object"),
        pytest.param({"gpus": [{}] * 300}, "gpus", id="too-many-gpus"),
        pytest.param({"gpus": [{"name": "x" * 5000}]}, "name", id="gpu-name-too-long"),
        pytest.param({"cpu_count": 0}, "cpu_count", id="no-cpus"),
        pytest.param({"cpu_count": BEYOND}, "cpu_count", id="cpus-past-range"),
        pytest.param({"memory_total_mb": True}, "memory_total_mb", id="memory-a-boolean"),
        pytest.param({"hostname": "a\x00b"}, "hostname", id="nul-in-hostname"),
        pytest.param({"notes": "a\x00b"}, "NUL", id="nul-in-an-unknown-key"),
        pytest.param({"junk": "x" * 200_000}, "bytes", id="too-large"),
        pytest.param({"junk": json.loads("[" * 50 + "]" * 50)}, "nested too deeply", id="too-deep"),
    ],
)
def test_hello_refuses_odd_capabilities_and_stores_nothing(agent, registered, capabilities, words):
    response = hello(agent, capabilities)

    error_detail(response, 400, "capabilities", words)
    assert Node.objects.get(pk=registered.node.pk).capabilities == {}


@pytest.mark.parametrize("body", [{"capabilities": [1]}, {"capabilities": "16 CPUs"}, {}, []])
def test_hello_needs_capabilities_as_an_object(agent, body):
    response = agent.post("/api/v1/agent/hello/", body, format="json")

    error_detail(response, 400)


def test_one_nodes_refused_hello_leaves_scheduling_working_for_the_others(agent, registered, owner, private_project):
    error_detail(hello(agent, {"gpus": [{"memory_total_mb": "lots"}]}), 400)
    other = services.node_register(owner=owner, name="other").node
    services.node_seen(node=other)
    services.node_seen(node=registered.node)  # the odd one is active too
    version = upload_notebook(private_project, owner).version
    services.run_submit(project=private_project, user=owner, notebook_version=version)

    claims = [services.run_claim(node=other), services.run_claim(node=registered.node)]  # neither raises

    assert [c for c in claims if c is not None]


# --- events -----------------------------------------------------------------------------------------
def post_events(run_client: APIClient, claim: services.Claim, *events: dict[str, Any]):
    return run_client.post(
        f"/api/v1/agent/runs/{claim.run.pk}/events/",
        {"lease_id": claim.lease_id, "events": list(events)},
        format="json",
    )


@pytest.mark.parametrize(
    ("event", "field"),
    [
        pytest.param({"seq": BEYOND, "kind": "log"}, "seq", id="seq-past-range"),
        pytest.param({"seq": 2**31, "kind": "log"}, "seq", id="seq-past-the-column"),
        pytest.param({"seq": 1, "kind": "stream", "cell_index": BEYOND}, "cell_index", id="cell-index-past-range"),
        pytest.param({"seq": 1, "kind": "stream", "cell_index": -1}, "cell_index", id="cell-index-negative"),
        pytest.param(
            {"seq": 1, "kind": "log", "payload": json.loads("[" * 150 + "]" * 150)}, "nested too deeply", id="deep"
        ),
    ],
)
def test_an_event_batch_with_an_out_of_range_field_is_400_and_stores_nothing(run_client, claim, event, field):
    before = RunEvent.objects.count()

    response = post_events(run_client, claim, event)

    error_detail(response, 400, field)
    assert RunEvent.objects.count() == before


def test_an_event_batch_nested_5000_levels_is_400(run_client, claim):
    deep = "[" * 5000 + "]" * 5000
    body = '{"lease_id": "' + claim.lease_id + '", "events": [{"seq": 1, "kind": "log", "payload": ' + deep + "}]}"

    response = run_client.post(f"/api/v1/agent/runs/{claim.run.pk}/events/", body, content_type="application/json")

    error_detail(response, 400, "nested too deeply")


def test_a_nul_character_a_notebook_printed_is_stored_as_a_replacement_character(run_client, claim):
    response = post_events(
        run_client, claim, {"seq": 1, "kind": "stream", "cell_index": 0, "payload": {"text": "a\x00b"}}
    )

    assert response.status_code == 200, response.content
    assert RunEvent.objects.get(run=claim.run, kind="stream").payload == {"text": "a\ufffdb"}


# --- output and artifact uploads ---------------------------------------------------------------------
def put(run_client: APIClient, url: str, body: bytes, *, lease: str, sha256: str | None = None):
    return run_client.put(
        url,
        data=body,
        content_type="application/octet-stream",
        HTTP_X_LEASE_ID=lease,
        HTTP_X_CONTENT_SHA256=sha256 or hashlib.sha256(body).hexdigest(),
    )


def put_output(run_client, claim, body: bytes, *, lease: str | None = None, sha256: str | None = None):
    return put(
        run_client, f"/api/v1/agent/runs/{claim.run.pk}/output/", body, lease=lease or claim.lease_id, sha256=sha256
    )


def test_a_valid_output_notebook_is_stored(run_client, claim):
    body = notebook_bytes(source="print('done')")

    response = put_output(run_client, claim, body)

    assert response.status_code == 200, response.content
    assert Run.objects.get(pk=claim.run.pk).pending_output["sha256"] == hashlib.sha256(body).hexdigest()
    assert len(blobs()) == 2  # the notebook version and the output


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(b"this is not json", "not valid json", id="not-json"),
        pytest.param(b'{"hello": "world"}', "not a valid jupyter notebook", id="json-not-a-notebook"),
        pytest.param(b"\xff\xfe binary", "not a notebook", id="binary"),
        pytest.param(("[" * 5000 + "]" * 5000).encode(), "nested too deeply", id="deep"),
    ],
)
def test_an_output_that_is_not_a_notebook_is_400_and_stores_nothing(run_client, claim, body, words):
    before = blobs()

    response = put_output(run_client, claim, body)

    error_detail(response, 400, words)
    assert blobs() == before
    assert Run.objects.get(pk=claim.run.pk).pending_output in (None, {})


def test_an_output_with_the_wrong_sha256_is_400_and_stores_nothing(run_client, claim):
    before = blobs()

    response = put_output(run_client, claim, notebook_bytes(), sha256="0" * 64)

    error_detail(response, 400, "sha256", "resend")
    assert blobs() == before


def test_an_output_under_a_stale_lease_is_409_and_stores_nothing(run_client, claim):
    before = blobs()

    response = put_output(run_client, claim, notebook_bytes(source="late"), lease=STALE_LEASE)

    error_detail(response, 409, "lease")
    assert blobs() == before


def put_artifact(run_client, claim, path: str, body: bytes, *, lease: str | None = None, sha256: str | None = None):
    url = f"/api/v1/agent/runs/{claim.run.pk}/artifacts/{path}"
    return put(run_client, url, body, lease=lease or claim.lease_id, sha256=sha256)


def test_an_artifact_with_the_wrong_sha256_is_400_and_stores_nothing(run_client, claim):
    before = blobs()

    response = put_artifact(run_client, claim, "out/result.csv", b"a,b\n1,2\n", sha256="0" * 64)

    error_detail(response, 400, "sha256")
    assert blobs() == before
    assert not RunArtifact.objects.exists()


def test_an_artifact_under_a_stale_lease_is_409_and_stores_nothing(run_client, claim):
    before = blobs()

    response = put_artifact(run_client, claim, "out/result.csv", b"a,b\n1,2\n", lease=STALE_LEASE)

    error_detail(response, 409, "lease")
    assert blobs() == before
    assert not RunArtifact.objects.exists()


def test_an_artifact_past_the_per_run_limit_is_400_and_stores_nothing(run_client, claim, settings):
    settings.REPROLAB_ARTIFACTS_PER_RUN = 1
    assert put_artifact(run_client, claim, "one.txt", b"1").status_code == 200
    before = blobs()

    response = put_artifact(run_client, claim, "two.txt", b"2")

    error_detail(response, 400, "at most 1 artifacts")
    assert blobs() == before


def test_a_comparison_header_nested_5000_levels_is_400(run_client, claim):
    response = run_client.put(
        f"/api/v1/agent/runs/{claim.run.pk}/artifacts/a.npy",
        data=b"x",
        content_type="application/octet-stream",
        HTTP_X_LEASE_ID=claim.lease_id,
        HTTP_X_CONTENT_SHA256=hashlib.sha256(b"x").hexdigest(),
        HTTP_X_REFERENCE_COMPARISON="[" * 5000 + "]" * 5000,
    )

    error_detail(response, 400, "X-Reference-Comparison")


def test_a_failed_row_removes_the_blob_it_created_but_not_one_that_was_there():
    existing = b"already stored for another row"
    default_storage.save(blob_name(hashlib.sha256(existing).hexdigest()), ContentFile(existing))
    for content in (b"new content", existing):
        with pytest.raises(RuntimeError), blob_for_row(ContentFile(content)):
            raise RuntimeError("the row was refused")

    assert [p.read_bytes() for p in blobs()] == [existing]


# --- environment snapshots --------------------------------------------------------------------------
def real_snapshot() -> dict[str, Any]:
    """What the agent's own module captures on this machine, as it would send it."""
    inputs = [{"role": "notebook", "path": "analysis.ipynb", "sha256": "a" * 64, "size": 10}]
    return json.loads(json.dumps(capture(kernel_name="python3", inputs=inputs)))


def post_environment(run_client, claim, environment: Any):
    return run_client.post(
        f"/api/v1/agent/runs/{claim.run.pk}/environment/",
        {"lease_id": claim.lease_id, "environment": environment},
        format="json",
    )


def test_a_real_snapshot_is_accepted_and_stored_as_captured(run_client, claim):
    snapshot = real_snapshot()
    assert len(snapshot["packages"]) > 50  # the suite's own environment: a realistic size

    response = post_environment(run_client, claim, snapshot)

    assert response.status_code == 201, response.content
    assert EnvironmentSnapshot.objects.get(run=claim.run).data == snapshot


def test_unknown_keys_of_a_snapshot_are_dropped_at_every_level(run_client, claim):
    snapshot = real_snapshot()
    snapshot["padding"] = "x" * 200_000
    snapshot["python"]["secret"] = "y" * 1000
    snapshot["inputs"][0]["extra"] = "z"

    response = post_environment(run_client, claim, snapshot)

    assert response.status_code == 201, response.content
    stored = EnvironmentSnapshot.objects.get(run=claim.run).data
    assert stored == real_snapshot()
    read = run_client.get(f"/api/v1/runs/{claim.run.pk}/environment/")
    assert "x" * 1000 not in read.content.decode()


def _oversized(snapshot: dict[str, Any]) -> None:
    """Over the 2 MiB cap on a snapshot, under Django's 2.5 MiB cap on a request body."""
    snapshot["inputs"] = [
        {"role": "data", "path": f"{index:05d}/" + "p" * 480, "sha256": "b" * 64, "size": 1} for index in range(3600)
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        pytest.param(lambda s: s.update(packages={f"p{i}": "1" for i in range(5001)}), "packages", id="many-packages"),
        pytest.param(lambda s: s["packages"].update({"x" * 300: "1"}), "packages", id="long-package-name"),
        pytest.param(lambda s: s["packages"].update({"a\x00b": "1"}), "packages", id="nul-in-a-key"),
        pytest.param(lambda s: s["packages"].update(numpy="1" * 300), "packages", id="long-version"),
        pytest.param(lambda s: s["os"].update(release="r" * 1000), "os.release", id="long-os-release"),
        pytest.param(lambda s: s.update(memory_mb=BEYOND), "memory_mb", id="memory-past-range"),
        pytest.param(lambda s: s["cpu"].update(count="many"), "cpu.count", id="cpu-count-text"),
        pytest.param(lambda s: s.update(gpus=[{"name": "g"}] * 65), "gpus", id="too-many-gpus"),
        pytest.param(lambda s: s["inputs"][0].update(size=BEYOND), "size", id="input-size-past-range"),
        pytest.param(lambda s: s.update(env={f"V{i}": "1" for i in range(101)}), "env", id="many-variables"),
        pytest.param(lambda s: s["kernel"].update(argv=["x"] * 51), "argv", id="long-argv"),
        pytest.param(lambda s: s.pop("kernel"), "kernel", id="no-kernel"),
        pytest.param(_oversized, "bytes", id="too-large"),
    ],
)
def test_an_unbounded_snapshot_is_400_and_stores_nothing(run_client, claim, change, words):
    snapshot = copy.deepcopy(real_snapshot())
    change(snapshot)

    response = post_environment(run_client, claim, snapshot)

    error_detail(response, 400, words)
    assert not EnvironmentSnapshot.objects.exists()
