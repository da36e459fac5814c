"""A researcher runs a notebook from its page and watches it live, in a real browser (Debian's
Chromium driven by Playwright) against daphne, with one real node agent executing the run."""

import datetime as dt
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from django.utils import timezone
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from apps.compute import services
from apps.compute.models import Node, Run, RunEvent
from apps.projects import services as project_services
from tests.factories import PASSWORD, make_user

from .browser import ARTIFACTS, in_orm_thread, log_in
from .servers import ROOT, stopping

pytestmark = [pytest.mark.integration, pytest.mark.browser]

STEPS = 3

# Records, in the page itself, when each cell changes class and the state badge changes, so the
# test can tell cells that turned green one after another from a page that got them all at once.
OBSERVER = """
(() => {
  if (!location.pathname.startsWith("/runs/")) return;
  window.__seen = [];
  const note = (what) => window.__seen.push(Object.assign(what, { t: performance.now() }));
  const observer = new MutationObserver((mutations) => {
    for (const m of mutations) {
      const target = m.target;
      if (target.id === "run-state" && m.attributeName === "data-state") {
        note({ kind: "state", value: target.dataset.state });
      } else if (target.classList && target.classList.contains("cell") && m.attributeName === "class") {
        for (const name of ["running", "ok", "error"]) {
          if (target.classList.contains(name)) note({ kind: name, index: target.dataset.cellIndex });
        }
      }
    }
  });
  document.addEventListener("DOMContentLoaded", () =>
    observer.observe(document.body, { subtree: true, attributes: true, attributeFilter: ["class", "data-state"] })
  );
})();
"""


def slow_notebook() -> bytes:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    parameters = new_code_cell('label = "demo"')
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# Slow steps"), parameters]
    for i in range(1, STEPS + 1):
        # The last line is hostile on purpose: event text must land in the page as text.
        extra = '\nprint("<b class=injected>not bold</b>")' if i == STEPS else ""
        # Print first, then work: the output shows while the cell is still running.
        nb.cells.append(new_code_cell(f'import time\nprint(f"{{label}} step {i}"){extra}\ntime.sleep(0.4)'))
    return nbformat.writes(nb).encode()


@pytest.fixture
def lab(transactional_db):
    """A user with a project holding the slow notebook, and a node registered for them."""
    user = make_user("rosa")
    project = project_services.project_create(creator=user, name="Slow lab", slug="slow-lab", visibility="private")
    stream = io.BytesIO(slow_notebook())
    project_services.notebook_upload(project=project, path="slow.ipynb", content=stream, uploader=user)
    registered = services.node_register(owner=user, name="test-node")
    return {"user": user, "project": project, "token": registered.token}


def start_agent(server: str, token: str, tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "agent"), env.get("PYTHONPATH", "")) if p)
    log = open(ROOT / "var" / f"agent-{os.getpid()}.log", "wb")  # noqa: SIM115 - the process owns it
    command = [sys.executable, "-m", "reprolab_agent", "--server", server, "--token", token]
    command += ["--work-dir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache"), "--wait", "2"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_run_from_notebook_page_and_watch_it_live(lab, live_server_url, browser_page, tmp_path):
    page = browser_page
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    page.add_init_script(OBSERVER)

    log_in(page, live_server_url, "rosa", PASSWORD)

    page.goto(f"{live_server_url}/p/slow-lab/notebooks/slow.ipynb")
    assert page.input_value("input[name=param_label]") == '"demo"'
    page.fill("input[name=param_label]", "browser")
    page.click("#run-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
    page.evaluate("window.__samePage = 'yes'")  # gone if anything reloads the page
    assert page.locator("#run-state").inner_text() == "queued"

    # The node's agent starts only now, so the page sees the whole run: queued, then live.
    with stopping(start_agent(live_server_url, lab["token"], tmp_path)):
        for i in range(1, STEPS + 1):
            cell = page.locator("li.cell", has_text=f"browser step {i}")
            cell.wait_for(timeout=60_000 if i == 1 else 20_000)
            page.locator("li.cell.ok", has_text=f"browser step {i}").wait_for()
        page.locator("#run-state[data-state=succeeded]").wait_for()
        page.locator("#output-link:visible").wait_for()

    assert page.evaluate("window.__samePage") == "yes"
    assert frames, "no WebSocket messages: the page did not follow the run live"
    assert page.locator("#live-status").is_hidden()

    # Streamed output, under its cell, as text (the hostile line did not become markup).
    for i in range(1, STEPS + 1):
        stream = page.locator("li.cell", has_text=f"browser step {i}").locator("pre.stream.stdout")
        assert f"browser step {i}" in stream.inner_text()
    assert "<b class=injected>not bold</b>" in page.locator("li.cell.ok").last.inner_text()
    assert page.locator("b.injected").count() == 0
    # The parameters cell papermill injected is shown and tagged.
    assert page.locator("li.cell .cell-tag:visible", has_text="injected parameters").count() == 1
    assert page.locator("li.cell.error").count() == 0
    # A run whose node reported no GPU use (no NVML, or none used) shows no GPU section at all.
    reported_gpus = in_orm_thread(
        lambda: any(e.payload.get("gpus") for e in RunEvent.objects.filter(run_id=run_id, kind="resources"))
    )
    assert page.locator("#run-gpus").is_hidden() is not reported_gpus
    assert page.locator("#run-gpus-label").is_hidden() is not reported_gpus

    # The cells turned green one by one, while the page watched (not all at once on load).
    seen = page.evaluate("window.__seen")
    indexes = [
        page.locator("li.cell", has_text=f"browser step {i}").get_attribute("data-cell-index") for i in (1, 2, 3)
    ]
    started = [next(e["t"] for e in seen if e["kind"] == "running" and e["index"] == index) for index in indexes]
    turned_ok = [next(e["t"] for e in seen if e["kind"] == "ok" and e["index"] == index) for index in indexes]
    assert all(s < ok for s, ok in zip(started, turned_ok, strict=True)), (started, turned_ok)
    assert turned_ok == sorted(turned_ok)
    assert all(later - earlier > 200 for earlier, later in itertools.pairwise(turned_ok)), turned_ok
    states = [e["value"] for e in seen if e["kind"] == "state"]
    assert "running" in states
    assert states[-1] == "succeeded"
    assert states.index("running") < states.index("succeeded")
    assert re.fullmatch(r"\d+:\d\d", page.locator("#run-elapsed").inner_text())

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)

    run = in_orm_thread(lambda: Run.objects.select_related("node").get(pk=run_id))
    assert run.state == "succeeded"
    assert run.parameters == {"label": "browser"}
    assert run.node is not None
    assert run.node.name == "test-node"
    assert len(run.output_sha256) == 64


# --- reconnects, lost messages and new attempts, driven through the services ------------------------------
class Lease:
    """A run claimed by a node, driven step by step from the test (no agent, no kernel)."""

    def __init__(self, run_id: int, node_id: int) -> None:
        self.run_id = run_id
        self.node_id = node_id
        self.lease_id = ""
        self.seq = 0

    def claim(self) -> None:
        def claim() -> None:
            node = Node.objects.get(pk=self.node_id)
            claimed = services.run_claim(node=node)
            assert claimed is not None
            assert claimed.run.pk == self.run_id
            self.lease_id = claimed.lease_id
            self.seq = 0
            services.run_heartbeat(run=claimed.run, lease_id=self.lease_id, running=True)

        in_orm_thread(claim)

    def events(self, *events: tuple[str, int | None, dict]) -> None:
        batch = []
        for kind, cell_index, payload in events:
            self.seq += 1
            batch.append({"agent_seq": self.seq, "kind": kind, "cell_index": cell_index, "payload": payload})
        in_orm_thread(
            lambda: services.run_events_append(
                run=Run.objects.get(pk=self.run_id), lease_id=self.lease_id, events=batch
            )
        )

    def cell(self, index: int, text: str) -> None:
        self.events(
            ("cell_started", index, {"source": f"print({text!r})", "injected": False}),
            ("stream", index, {"name": "stdout", "text": text + "\n"}),
            ("cell_executed", index, {"status": "ok", "duration": 0.01}),
        )

    def lose_lease(self) -> None:
        def expire() -> None:
            Run.objects.filter(pk=self.run_id).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
            assert services.expire_leases() == 1

        in_orm_thread(expire)

    def succeed(self) -> None:
        def complete() -> None:
            run = Run.objects.get(pk=self.run_id)
            body = b'{"cells": []}'
            services.run_output_upload(
                run=run, lease_id=self.lease_id, stream=io.BytesIO(body), sha256=hashlib.sha256(body).hexdigest()
            )
            services.run_complete(run=run, lease_id=self.lease_id, state="succeeded")

        in_orm_thread(complete)


@pytest.fixture
def claimed_run(lab) -> Lease:
    """A run of the slow notebook, claimed by the lab's node and running."""
    version = lab["project"].notebooks.get().latest_version
    run = services.run_submit(project=lab["project"], user=lab["user"], notebook_version=version)
    node = Node.objects.get(owner=lab["user"])
    lease = Lease(run.pk, node.pk)
    claimed = services.run_claim(node=node)
    assert claimed is not None
    lease.lease_id = claimed.lease_id
    services.run_heartbeat(run=claimed.run, lease_id=lease.lease_id, running=True)
    return lease


def test_run_page_resyncs_after_lost_messages_and_reconnects(require_redis, claimed_run, live_server_url, browser_page):
    """Events reach a page that is already open through Redis and daphne. The socket is routed
    through the test, which drops messages and closes it: the page must fill every gap from REST."""
    lease = claimed_run
    # More events than one REST page (200) before the page opens: the first load follows `next`.
    gpu = {
        "index": 0,
        "name": "<b>H100</b>",
        "utilization_percent": 87.0,
        "memory_used_mb": 30512,
        "memory_total_mb": 81559,
    }
    lease.events(
        ("cell_started", 3, {"source": "for i in range(230): print(i)", "injected": False}),
        *[("stream", 3, {"name": "stdout", "text": f"line {i}\n"}) for i in range(230)],
        ("cell_executed", 3, {"status": "ok", "duration": 1.5}),
        ("resources", None, {"processes": 2, "rss_mb": 300.0, "cpu_percent": 99.5, "gpus": [gpu, "junk"]}),
        ("resources", None, {"processes": 2, "rss_mb": 310.0, "cpu_percent": 12.0}),  # NVML gone: keep the last
    )

    page = browser_page
    connections: list[dict] = []

    def route(ws) -> None:
        server = ws.connect_to_server()
        connection_state = {"drop_all": not connections, "drop_seqs": set(), "dropped": [], "ws": ws, "server": server}
        connections.append(connection_state)

        def from_server(message) -> None:
            seq = json.loads(message)["seq"]
            if connection_state["drop_all"] or seq in connection_state["drop_seqs"]:
                connection_state["dropped"].append(seq)
                return
            ws.send(message)

        server.on_message(from_server)

    page.route_web_socket(re.compile(r".*/ws/runs/\d+/$"), route)
    log_in(page, live_server_url, "rosa", PASSWORD)
    page.goto(f"{live_server_url}/runs/{lease.run_id}/")
    page.evaluate("window.__samePage = 'yes'")

    first = page.locator("li.cell[data-cell-index='3']")
    first.locator("pre.stream", has_text="line 229").wait_for()  # two REST pages
    assert first.locator("pre.stream").inner_text().count("line ") == 230
    assert page.locator("#run-state").inner_text() == "running"
    assert page.locator("#run-resources").inner_text() == "12% CPU · 310 MiB · 2 processes"
    gpus = page.locator("#run-gpus li[data-gpu-index='0']")
    assert gpus.count() == 1
    assert " ".join(gpus.inner_text().split()) == "#0 <b>H100</b> busy 87% memory 29.8 / 79.6 GiB"
    assert page.locator("#run-gpus b").count() == 0

    page.locator("#cells[data-socket=open][data-syncing=false]").wait_for()  # caught up after connecting

    # 1. The first socket loses everything: the page cannot know yet.
    lease.cell(4, "lost on the first socket")
    wait_for(page, lambda: len(connections[0]["dropped"]) == 3)
    assert page.locator("li.cell", has_text="lost on the first socket").count() == 0

    # 2. The socket closes; the page reconnects and resyncs from REST after its last seq.
    connections[0]["ws"].close(code=4000, reason="test")
    connections[0]["server"].close()
    page.locator("li.cell.ok", has_text="lost on the first socket").wait_for()
    assert len(connections) == 2
    page.locator("#cells[data-socket=open][data-syncing=false]").wait_for()

    # 3. A single lost message on a live socket: the next one reveals the gap; REST fills it.
    lost_seq = in_orm_thread(lambda: Run.objects.get(pk=lease.run_id).last_event_seq) + 1
    connections[1]["drop_seqs"].add(lost_seq)
    lease.events(
        ("stream", 4, {"name": "stdout", "text": "gap A\n"}), ("stream", 4, {"name": "stdout", "text": "gap B\n"})
    )
    page.locator("li.cell[data-cell-index='4'] pre.stream", has_text="gap B").wait_for()
    assert connections[1]["dropped"] == [lost_seq]
    assert "gap A\ngap B" in page.locator("li.cell[data-cell-index='4'] pre.stream").last.inner_text()

    # 4. The node goes silent: the run is requeued as attempt 2 and the page starts over.
    lease.lose_lease()
    page.locator("#attempt-note:visible", has_text="Attempt 2").wait_for()
    page.locator("#run-state[data-state=queued]").wait_for()
    assert page.locator("li.cell").count() == 0
    assert page.locator("#run-attempt").inner_text() == "2"
    assert page.locator("#run-gpus").is_hidden()  # attempt 2 may run on a node without GPUs

    lease.claim()
    lease.cell(3, "attempt two, first cell")
    page.locator("li.cell.ok", has_text="attempt two, first cell").wait_for()
    page.locator("#run-state[data-state=running]").wait_for()
    lease.succeed()
    page.locator("#run-state[data-state=succeeded]").wait_for()
    page.locator("#output-link:visible").wait_for()
    assert page.locator("#cancel-form").is_hidden()
    assert page.locator("li.cell").count() == 1
    assert page.evaluate("window.__samePage") == "yes"


def wait_for(page, condition, timeout: float = 20.0) -> None:
    """Let Playwright deliver its events (routed socket messages) until `condition` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        page.wait_for_timeout(50)  # a bounded poll on a condition, not a fixed sleep
