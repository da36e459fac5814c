"""A harness for running notebooks on the agent's warm pool without a site: a pool at a chosen
isolation level, and `run_cells` to execute a notebook on one of its slots under the run watch
(limits, timeout), collecting what the run process reported."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from reprolab_agent.lease import RunContext
from reprolab_agent.limits import Limits
from reprolab_agent.pool import Slot, WarmPool
from reprolab_agent.sandbox import Sandbox, Unavailable, detect

ROOT = os.geteuid() == 0
LINUX = sys.platform.startswith("linux")


def sandbox_at(level: str, site: Path) -> Sandbox:
    """The sandbox at `level`, or a skip saying why it does not work here (a failure under CI for
    bwrap, which CI installs)."""
    try:
        return detect(level, protect=[site], work_root=site / "var" / "local-node" / "work")
    except Unavailable as error:
        if level == "bwrap" and os.environ.get("CI") == "true":
            pytest.fail(f"bubblewrap must work under CI=true: {error}")
        pytest.skip(f"isolation {level} does not work here: {error}")


@contextlib.contextmanager
def warm_pool(sandbox: Sandbox, site: Path, limits: Limits | None = None, **options: Any) -> Iterator[WarmPool]:
    pool = WarmPool(
        sandbox,
        work_root=site / "var" / "local-node" / "work",
        limits=limits or Limits(),
        concurrency=options.pop("concurrency", 1),
        spare=options.pop("spare", 0),
        **options,
    )
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


@contextlib.contextmanager
def taken(pool: WarmPool) -> Iterator[Slot]:
    """A slot of the pool, discarded (with its folder) and given back on the way out."""
    slot = pool.take()
    try:
        yield slot
    finally:
        pool.discard(slot)
        pool.remove(slot)
        pool.give_back()


def notebook(*sources: str, kernel: str | None = "python3", parameters: str | None = None) -> bytes:
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    return nbformat.writes(nb).encode()


@dataclass
class Outcome:
    code: int
    events: list[dict[str, Any]]
    output: dict[str, Any] | None
    stopped_for: str
    workdir: Path
    slot: Slot
    texts: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(
            str(e["payload"].get("text", ""))
            for e in self.events
            if e.get("kind") == "stream" and e["payload"].get("name") == "stdout"
        )

    @property
    def notebook(self) -> dict[str, Any]:
        assert self.output is not None, "the run wrote no output notebook"
        return self.output

    def outputs(self) -> list[Any]:
        return [o for cell in self.notebook["cells"] for o in cell.get("outputs", [])]


class _Collected:
    """Takes the watch's `resources` events, as an EventSender would send them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def run_cells(
    pool: WarmPool,
    body: bytes,
    *,
    parameters: dict[str, Any] | None = None,
    kernel: str | None = "python3",
    timeout: float = 120.0,
    network: bool = False,
    gpus: tuple[int, ...] = (),
    keep: bool = False,
    environment: Any = None,
) -> Outcome:
    """Execute a notebook on a slot as the agent would, under the run watch; returns what the
    run reported. The slot is discarded (and, unless `keep`, its folder removed) afterwards."""
    from reprolab_agent.watch import RunWatch

    slot = pool.take(network=network, gpus=gpus, environment=environment)
    try:
        (slot.workdir / "_input.ipynb").write_bytes(body)
        (slot.workdir / "_input.ipynb").chmod(0o644)
        claim = {"run": {"id": 1, "timeout_seconds": timeout}, "lease": {"id": "x"}, "heartbeat_seconds": 2}
        ctx = RunContext(claim=claim, client=None, workdir=slot.workdir)  # type: ignore[arg-type]  # the watch calls nothing
        collected = _Collected()
        slot.start(
            {
                "input": "_input.ipynb",
                "output": "_output.ipynb",
                "parameters": parameters or {},
                "kernel": kernel,
                "environment": environment is not None,
            }
        )
        watch = RunWatch(
            ctx,
            slot,
            collected,
            limits=pool.limits,
            timeout=timeout,
        )
        watch.start()
        events: list[dict[str, Any]] = []
        try:
            for event in slot.follow():
                if event.get("kind") == "cell_started":
                    ctx.current_cell = event.get("cell_index")
                events.append(event)
        finally:
            ctx.finished.set()
            watch.join()
        code = -1 if slot.exit_code is None else slot.exit_code
        pool.discard(slot)
        output_file = slot.workdir / "_output.ipynb"
        output = json.loads(output_file.read_text()) if output_file.is_file() else None
        return Outcome(
            code=code,
            events=events + collected.events,
            output=output,
            stopped_for=ctx.stopped_for,
            workdir=slot.workdir,
            slot=slot,
        )
    finally:
        pool.discard(slot)
        if not keep:
            pool.remove(slot)
        pool.give_back()


def in_thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
