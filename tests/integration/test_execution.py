"""The execution fabric end to end, with real processes: daphne (ASGI), a Celery worker with
beat (the lease sweeper), PostgreSQL and Redis, and two node agent processes running papermill.

Leases are short here (3 s, heartbeats every 1 s) so that a killed agent's run is requeued in
seconds. Every wait is on a condition with a deadline, never a fixed sleep.
"""

import asyncio
import io
import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
import websockets
from django.test import Client

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Run, RunEvent, RunState
from apps.projects import services as project_services
from apps.projects.models import Notebook, Project
from tests.factories import upload_notebook

from .fabric import FINAL, wait_for_state
from .servers import wait_until

pytestmark = pytest.mark.integration


def slow_notebook(project: Project, owner: User, path: str, *, cells: int, seconds: float) -> Notebook:
    source = "\n".join(
        [f"import time\nfor i in range({cells}):", f"    time.sleep({seconds})", "    print('tick', i, flush=True)"]
    )
    return upload_notebook(project, owner, path, source=source, parameters="label = 'x'").notebook


def _session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def test_parameterized_run_streams_ordered_events_and_stores_output(stack):
    notebook = upload_notebook(
        stack.project, stack.user, "params.ipynb", source="print('result', alpha * steps)"
    ).notebook
    run_id = stack.submit(notebook, parameters={"alpha": 0.25, "steps": 3})
    ws_url = stack.url.replace("http://", "ws://") + f"/ws/runs/{run_id}/"

    async def follow() -> list[dict]:
        received = []
        headers = {"Cookie": _session_cookie_async_safe}
        async with websockets.connect(ws_url, origin=stack.url, additional_headers=headers) as socket:
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), timeout=60))
                received.append(event)
                if event["kind"] == "state" and event["payload"]["state"] in FINAL:
                    return received

    _session_cookie_async_safe = _session_cookie(stack.user)
    live = asyncio.run(follow())

    # Live events arrive in order; with the REST history before them they cover every seq once.
    live_seqs = [e["seq"] for e in live]
    assert live_seqs == sorted(set(live_seqs))
    status, history = stack.api("GET", f"/api/v1/runs/{run_id}/events/?after=0&page_size=200")
    assert status == 200
    assert isinstance(history, dict)
    stored = [e["seq"] for e in history["results"]]
    assert stored == list(range(1, len(stored) + 1))
    assert set(live_seqs) <= set(stored)
    assert live[-1]["payload"]["state"] == "succeeded"
    kinds = [e["kind"] for e in history["results"]]
    assert kinds.index("cell_started") < kinds.index("cell_executed")
    assert any(e["kind"] == "stream" and "result 0.75" in e["payload"]["text"] for e in history["results"])

    status, body = stack.api("GET", f"/api/v1/runs/{run_id}/output/")
    assert status == 200
    assert isinstance(body, dict)  # the output notebook is JSON
    output = nbformat.reads(json.dumps(body), as_version=4)
    injected = [c for c in output.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "alpha = 0.25" in injected[0].source
    assert "steps = 3" in injected[0].source
    printed = "".join(o.get("text", "") for c in output.cells for o in c.get("outputs", []))
    assert "result 0.75" in printed
    run = Run.objects.get(pk=run_id)
    assert run.output_sha256
    assert run.node is not None


def test_three_run_dag_runs_in_dependency_order(stack):
    notebook = upload_notebook(stack.project, stack.user, "step.ipynb", source="print('step', alpha)").notebook
    first = stack.submit(notebook, parameters={"alpha": 1.0})
    second = stack.submit(notebook, parameters={"alpha": 2.0}, depends_on=[first])
    third = stack.submit(notebook, parameters={"alpha": 3.0}, depends_on=[first, second])
    runs = [wait_for_state(run_id, FINAL) for run_id in (first, second, third)]
    assert [r.state for r in runs] == ["succeeded"] * 3
    ends = [r.finished_at for r in runs]
    starts = [r.started_at for r in runs]
    assert None not in ends
    assert None not in starts
    assert ends[0] <= starts[1]  # type: ignore[operator]
    assert ends[1] <= starts[2]  # type: ignore[operator]


def test_cancelling_a_long_run_stops_it(stack):
    notebook = slow_notebook(stack.project, stack.user, "long.ipynb", cells=600, seconds=0.1)
    run_id = stack.submit(notebook)
    wait_until(
        lambda: RunEvent.objects.filter(run_id=run_id, kind="stream").exists(), timeout=60, what="the long run to print"
    )
    status, body = stack.api("POST", f"/api/v1/runs/{run_id}/cancel/")
    assert status == 200, body
    run = wait_for_state(run_id, FINAL, timeout=30)
    assert run.state == "cancelled"
    # The kernel stopped: no output arrives after the cancellation settled.
    ticks = RunEvent.objects.filter(run_id=run_id, kind="stream").count()
    assert ticks < 600
    assert not RunEvent.objects.filter(run_id=run_id, seq__gt=run.last_event_seq).exists()


def test_killed_agent_run_is_requeued_and_completed_once_by_the_other(stack):
    notebook = slow_notebook(stack.project, stack.user, "steady.ipynb", cells=6, seconds=0.5)
    run_id = stack.submit(notebook)
    wait_until(
        lambda: RunEvent.objects.filter(run_id=run_id, kind="stream").exists(),
        timeout=60,
        what="the run to start printing",
    )
    victim = Run.objects.get(pk=run_id).node
    assert victim is not None
    os.killpg(stack.agents[victim.name].pid, signal.SIGKILL)

    run = wait_for_state(run_id, FINAL, timeout=90)
    assert run.state == "succeeded"
    assert run.attempt == 2
    assert run.node is not None
    assert run.node.name != victim.name
    final_states = RunEvent.objects.filter(run_id=run_id, kind="state", payload__state="succeeded")
    assert final_states.count() == 1
    requeued = RunEvent.objects.filter(run_id=run_id, kind="state", payload__state="queued", attempt=2)
    assert requeued.exists()
    # The second attempt printed every tick; the first attempt's partial output is kept apart.
    second_ticks = RunEvent.objects.filter(run_id=run_id, kind="stream", attempt=2)
    assert "".join(e.payload["text"] for e in second_ticks).count("tick") == 6
    # The agent sampled the run's processes while it ran (every 2 s).
    resources = RunEvent.objects.filter(run_id=run_id, kind="resources", attempt=2).first()
    assert resources is not None
    assert resources.payload["rss_mb"] > 0


def test_bad_parameters_are_refused_with_a_clear_message(stack):
    notebook = upload_notebook(stack.project, stack.user, "typed.ipynb").notebook
    status, body = stack.api(
        "POST",
        "/api/v1/runs/",
        {"project": stack.project.slug, "notebook": notebook.pk, "parameters": {"steps": "ten"}},
    )
    assert status == 400
    assert isinstance(body, dict)
    assert "steps" in body["detail"]
    status, body = stack.api(
        "POST",
        "/api/v1/runs/",
        {"project": stack.project.slug, "notebook": notebook.pk, "parameters": {"__import__('os')": 1}},
    )
    assert status == 400
    assert not Run.objects.exists()


def _agent_call(url: str, path: str, token: str, body: dict | None = None, method: str = "POST") -> tuple[int, dict]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body or {}).encode() if method == "POST" else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_stale_lease_gets_409_and_run_token_cannot_touch_another_run(stack, tmp_path: Path):
    """A hand-driven node claims runs the agents cannot take (they need its tag)."""
    manual = compute.node_register(owner=stack.user, name="manual", tags=["manual"], max_concurrency=2)
    notebook = upload_notebook(stack.project, stack.user, "manual.ipynb").notebook
    first = stack.submit(notebook, requirements={"tags": ["manual"]})
    second = stack.submit(notebook, requirements={"tags": ["manual"]})

    status, claim_a = _agent_call(stack.url, "/api/v1/agent/claim/?wait=5", manual.token)
    assert status == 200
    status, claim_b = _agent_call(stack.url, "/api/v1/agent/claim/?wait=5", manual.token)
    assert status == 200
    assert {claim_a["run"]["id"], claim_b["run"]["id"]} == {first, second}

    # A run token is scoped to its own run.
    status, _ = _agent_call(
        stack.url,
        f"/api/v1/agent/runs/{claim_b['run']['id']}/heartbeat/",
        claim_a["run_token"],
        {"lease_id": claim_b["lease"]["id"]},
    )
    assert status == 403

    # Settle run B with its own lease, so only run A is left to lapse.
    status, _ = _agent_call(
        stack.url,
        f"/api/v1/agent/runs/{claim_b['run']['id']}/complete/",
        claim_b["run_token"],
        {"lease_id": claim_b["lease"]["id"], "state": "failed", "error": "given up by hand"},
    )
    assert status == 200

    # Let run A's lease lapse (no heartbeats): the sweeper requeues it as attempt 2.
    run_a = claim_a["run"]["id"]
    wait_until(lambda: Run.objects.get(pk=run_a).attempt == 2, timeout=30, what="the lapsed lease to be requeued")
    status, reclaim = _agent_call(stack.url, "/api/v1/agent/claim/?wait=5", manual.token)
    assert status == 200
    assert reclaim["run"]["id"] == run_a
    assert reclaim["run"]["attempt"] == 2

    # The old lease is stale: its completion is refused with 409 and changes nothing.
    status, _ = _agent_call(
        stack.url,
        f"/api/v1/agent/runs/{run_a}/complete/",
        reclaim["run_token"],
        {"lease_id": claim_a["lease"]["id"], "state": "failed"},
    )
    assert status == 409
    assert Run.objects.get(pk=run_a).state == RunState.LEASED
    # And the first attempt's token died with its lease.
    status, _ = _agent_call(
        stack.url, f"/api/v1/agent/runs/{run_a}/heartbeat/", claim_a["run_token"], {"lease_id": claim_a["lease"]["id"]}
    )
    assert status == 401


def test_runs_record_their_environment_and_a_changed_input_shows_in_the_diff(stack):
    dataset = project_services.dataset_create(project=stack.project, name="obs", creator=stack.user)

    def add_version(text: bytes) -> str:
        version, _ = project_services.dataset_add_files(
            dataset=dataset, files=[project_services.IncomingFile("obs.csv", io.BytesIO(text))], uploader=stack.user
        )
        return version.files.get().sha256

    notebook = upload_notebook(
        stack.project, stack.user, "reads.ipynb", source="print(open('obs.csv').read())"
    ).notebook
    sha_v1 = add_version(b"x\n1\n")
    first = stack.submit(notebook, datasets=[{"name": "obs", "version": 1}])
    sha_v2 = add_version(b"x\n2\n")
    second = stack.submit(notebook, datasets=[{"name": "obs", "version": 2}])
    assert [wait_for_state(r, FINAL).state for r in (first, second)] == ["succeeded", "succeeded"]

    status, snapshot = stack.api("GET", f"/api/v1/runs/{first}/environment/")
    assert status == 200
    assert isinstance(snapshot, dict)
    environment = snapshot["environment"]
    assert "papermill" in environment["packages"]
    assert environment["python"]["version"]
    assert environment["kernel"]["name"] == "python3"
    inputs = {i["path"]: i for i in environment["inputs"]}
    assert inputs["reads.ipynb"]["sha256"] == notebook.latest_version.sha256  # type: ignore[union-attr]
    assert inputs["obs.csv"]["sha256"] == sha_v1
    assert inputs["obs.csv"]["dataset"] == "obs@v1"

    status, diff = stack.api("GET", f"/api/v1/runs/{second}/environment/diff/?against={first}")
    assert status == 200
    assert isinstance(diff, dict)
    assert diff["inputs"]["changed"] == {"obs.csv": [sha_v1, sha_v2]}
    assert diff["same_stack"] is True
    assert diff["packages"] == {"added": {}, "removed": {}, "changed": {}}
