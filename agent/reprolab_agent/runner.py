"""The agent loop: claim a run, materialise its inputs, execute it in a child process, stream
events, upload the output, complete. Heartbeats run on their own thread, never behind the kernel.

Stopping (SIGTERM or SIGINT, like a CI runner): no new claims (a waiting long-poll ends at once);
runs in flight get a grace period to finish, then they are interrupted and released, so the site
requeues them at once and charges no attempt. Failures of the node rather than of the notebook
(the kernel did not start, the site stayed unreachable for an upload) are released as
"infrastructure": the site retries them elsewhere, up to its max_attempts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import Client, GaveUp, Interrupted, Reply
from .environment import KernelChoice, capture, choose_kernel, run_environment
from .execute import EXIT_KERNEL_DID_NOT_START
from .hashing import HashCache, sha256_file
from .resources import sample_session, usage
from .sandbox import Sandbox, agent_pythonpath, read_regular, regular_files

log = logging.getLogger("reprolab_agent")

EXIT_STATES = {0: "succeeded", 3: "failed", 4: "failed", 130: "cancelled"}
EXIT_INFRASTRUCTURE = EXIT_KERNEL_DID_NOT_START  # the node's failure, not the notebook's result
SHUTDOWN_KILL_SECONDS = 5.0  # after the grace period, an interrupted run's child gets this long
RELEASE_RETRY_SECONDS = 10.0  # a release is worth a few retries; then the lease expires instead
SETTLE_SECONDS = 15.0  # after the grace period, how long the runs get to be released
DEFAULT_GRACE_SECONDS = 30.0
EVENT_BATCH = 100
EVENT_FLUSH_SECONDS = 0.2
RESOURCE_SECONDS = 2.0
MAX_ARTIFACTS = 200
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024


class LeaseLost(Exception):
    """The site answered 409: another attempt owns the run now. Stop and report nothing."""


class FileCache:
    """Input files cached by sha256, so a node fetches each dataset file once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.hashes = HashCache(root / "hashes.json")

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def fetch(self, client: Client, url: str, sha256: str, token: str) -> Path:
        """The cached file for this digest, downloaded (streamed, hashed on the way) if missing
        or if the cached copy no longer matches (checked through the (path, size, mtime) cache,
        so an unchanged file is not read again)."""
        target = self.path(sha256)
        if target.exists() and self.hashes.sha256(target) == sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            partial = Path(tmp.name)
        try:
            if client.download(url, partial, token=token) != sha256:
                raise RuntimeError(f"input {sha256[:12]} arrived corrupted (sha256 mismatch)")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self.hashes.remember(target, sha256)
        self.hashes.save()
        return target


@dataclass
class RunContext:
    claim: dict[str, Any]
    client: Client
    workdir: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    lease_lost: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    # The agent's grace period is over: interrupt the run and release it (shared by all runs).
    shutdown: threading.Event = field(default_factory=threading.Event)
    # Completing or releasing: the lease ends now, so a heartbeat's 409 is expected, not news.
    settled: threading.Event = field(default_factory=threading.Event)
    stopped_for: str = ""  # "shutdown" once the watchdog interrupted the run for it

    @property
    def run_id(self) -> int:
        return int(self.claim["run"]["id"])

    @property
    def lease_id(self) -> str:
        return str(self.claim["lease"]["id"])

    def call(self, method: str, name: str, **kwargs: Any) -> Reply:
        reply = self.client.call(method, self.claim["urls"][name], token=self.claim["run_token"], **kwargs)
        if reply.status == 409 or reply.status == 401:
            # 409: stale lease; 401: the run token ended with it. Either way the run is not ours.
            self.lease_lost.set()
            raise LeaseLost(f"run {self.run_id}: {reply.json() if reply.body else reply.status}")
        if reply.status >= 400:
            raise RuntimeError(f"run {self.run_id} {name}: HTTP {reply.status} {reply.body[:300]!r}")
        return reply


class Heartbeat(threading.Thread):
    def __init__(self, ctx: RunContext) -> None:
        super().__init__(name=f"heartbeat-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.stop = threading.Event()
        self.interval = float(ctx.claim.get("heartbeat_seconds", 20))

    def beat(self) -> None:
        reply = self.ctx.call(
            "POST",
            "heartbeat",
            json_body={"lease_id": self.ctx.lease_id, "running": self.ctx.started.is_set()},
            retry_for=self.interval,
        )
        if (reply.json() or {}).get("cancel_requested"):
            self.ctx.cancel.set()

    def tick(self) -> bool:
        """One heartbeat; False when there is nothing more to renew."""
        if self.ctx.settled.is_set():
            return False
        try:
            self.beat()
        except LeaseLost:
            if self.ctx.settled.is_set():  # this beat crossed our own complete or release
                log.debug("run %s: heartbeat after the lease ended", self.ctx.run_id)
            else:
                log.warning("run %s: lease lost; stopping", self.ctx.run_id)
            return False
        except (GaveUp, RuntimeError) as error:
            log.warning("run %s: heartbeat failed: %s", self.ctx.run_id, error)
        return True

    def run(self) -> None:
        while not self.stop.wait(self.interval) and self.tick():
            pass


class EventSender(threading.Thread):
    """Numbers events per attempt and posts them in batches from its own thread, at least every
    EVENT_FLUSH_SECONDS, so a finished cell is reported even while the next one is silent. A
    failed batch is resent as is (the site ignores sequence numbers it already has)."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(name=f"events-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self.lock = threading.Lock()  # guards `pending`
        self.sending = threading.Lock()  # one POST at a time, so batches arrive in order
        self.done = threading.Event()

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.seq += 1
            self.pending.append(
                {
                    "seq": self.seq,
                    "kind": event["kind"],
                    "cell_index": event.get("cell_index"),
                    "payload": event.get("payload", {}),
                }
            )

    def flush(self) -> None:
        with self.sending:
            while True:
                with self.lock:
                    batch = self.pending[:EVENT_BATCH]
                if not batch:
                    return
                self.ctx.call(
                    "POST", "events", json_body={"lease_id": self.ctx.lease_id, "events": batch}, retry_for=120
                )
                with self.lock:
                    del self.pending[: len(batch)]

    def run(self) -> None:
        while not self.done.wait(EVENT_FLUSH_SECONDS):
            try:
                self.flush()
            except LeaseLost:
                return  # the watchdog sees lease_lost and stops the run
            except (GaveUp, RuntimeError) as error:
                log.warning("run %s: sending events failed: %s", self.ctx.run_id, error)

    def close(self) -> None:
        """Stop the background flushing and send what is left."""
        self.done.set()
        self.join()
        self.flush()


class RunExecutor:
    def __init__(self, client: Client, cache: FileCache, work_root: Path, kernel: str | None = None) -> None:
        self.client = client
        self.cache = cache
        self.work_root = work_root
        self.kernel = kernel
        self.shutdown = threading.Event()  # set by the Agent when its grace period ends
        self.sandbox = Sandbox("none")  # the CLI sets the level it probed (reprolab_agent.sandbox)

    def prepare(self, ctx: RunContext) -> Path:
        notebook = ctx.workdir / "_input.ipynb"
        reply = ctx.call("GET", "notebook")
        if hashlib.sha256(reply.body).hexdigest() != ctx.claim["run"]["notebook_sha256"]:
            raise RuntimeError("the notebook arrived corrupted (sha256 mismatch)")
        notebook.write_bytes(reply.body)
        try:
            metadata = json.loads(reply.body).get("metadata", {})
        except (ValueError, RecursionError, AttributeError) as error:
            raise RuntimeError(f"the notebook is not readable JSON: {error}") from error
        # Kept with the claim for the snapshot and the child. A notebook that names no kernel
        # runs on its language's (python3), as Jupyter does, and the run says so.
        ctx.claim["kernel"] = choose_kernel(metadata if isinstance(metadata, dict) else {}, override=self.kernel)
        # A run with the agent's own uid (bwrap without root) gets copies: through a hard link it
        # could rewrite the node's cached input for later runs. A run uid gets links to files
        # it can read but not write.
        copy = self.sandbox.level != "none" and not self.sandbox.drops_uid
        for item in ctx.claim["run"]["files"]:
            cached = self.cache.fetch(self.client, item["url"], item["sha256"], ctx.claim["run_token"])
            target = (ctx.workdir / item["path"]).resolve()
            if ctx.workdir.resolve() not in target.parents:  # the site validates paths; check anyway
                raise RuntimeError(f"unsafe input path {item['path']!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.sandbox.drops_uid:
                os.chmod(cached, 0o644)
            if copy:
                shutil.copyfile(cached, target)
                continue
            try:
                os.link(cached, target)
            except OSError:  # another file system
                shutil.copyfile(cached, target)
        return notebook

    def execute(self, claim: dict[str, Any]) -> str:
        """Run one claimed run to its end. Returns the final state reported (or 'lost')."""
        workdir = Path(tempfile.mkdtemp(prefix=f"run{claim['run']['id']}-", dir=self.work_root))
        ctx = RunContext(claim=claim, client=self.client, workdir=workdir, shutdown=self.shutdown)
        heartbeat = Heartbeat(ctx)
        heartbeat.start()
        try:
            return self._execute(ctx)
        except LeaseLost as error:
            log.warning("%s", error)
            return "lost"
        finally:
            heartbeat.stop.set()
            shutil.rmtree(workdir, ignore_errors=True)

    def _execute(self, ctx: RunContext) -> str:
        try:
            notebook = self.prepare(ctx)
        except GaveUp as error:  # the site stayed unreachable: not the notebook's fault
            return self.release(ctx, "infrastructure", f"could not fetch the inputs: {error}")
        except RuntimeError as error:
            return self.complete(ctx, "failed", f"Could not prepare the run: {error}")
        if ctx.shutdown.is_set():
            return self.release(ctx, "shutdown", "the agent stopped before the run started")
        self.record_environment(ctx, notebook)
        events = EventSender(ctx)
        events.start()
        try:
            output = ctx.workdir / "_output.ipynb"
            code, last_log = self._run_child(ctx, notebook, output, events)
        finally:
            events.done.set()  # on any error too: no flusher thread outlives its run
        events.close()
        if ctx.lease_lost.is_set():
            raise LeaseLost(f"run {ctx.run_id}: lease lost while running")
        if ctx.stopped_for == "shutdown":
            return self.release(ctx, "shutdown", "the agent stopped; its grace period ended before the run did")
        if code == EXIT_INFRASTRUCTURE and not ctx.cancel.is_set():
            return self.release(ctx, "infrastructure", last_log or "the kernel did not start")
        state = "cancelled" if ctx.cancel.is_set() else EXIT_STATES.get(code, "failed")
        message = "" if state == "succeeded" else self._error_text(code, ctx, last_log)
        try:
            if output.exists():
                self.upload(ctx, output)
            elif state == "succeeded":
                state, message = "failed", "papermill wrote no output notebook"
            self.upload_artifacts(ctx, compare=state == "succeeded")
        except GaveUp as error:  # the site stayed unreachable through every retry
            return self.release(ctx, "infrastructure", f"could not upload the results: {error}")
        except RuntimeError as error:  # the site refused the output (4xx): that is the result
            state, message = "failed", f"The site refused the output notebook: {error}"
        return self.complete(ctx, state, message)

    def record_environment(self, ctx: RunContext, notebook: Path) -> None:
        """Send the environment snapshot before the run starts. The inputs' sha256 are the ones
        verified on fetch (the node's cache is content-addressed), so nothing is hashed twice."""
        run = ctx.claim["run"]
        inputs = [
            {
                "role": "notebook",
                "path": run["notebook_path"],
                "sha256": run["notebook_sha256"],
                "size": notebook.stat().st_size,
            }
        ]
        inputs += [
            {"role": "data", "path": f["path"], "sha256": f["sha256"], "size": f["size"], "dataset": f.get("dataset")}
            for f in run["files"]
        ]
        kernel: KernelChoice = ctx.claim["kernel"]
        snapshot = capture(
            kernel_name=kernel.name, kernel_chosen=kernel.chosen, inputs=inputs, env=_child_env(ctx.workdir)
        )
        if "environment" in ctx.claim["urls"]:
            ctx.call("POST", "environment", json_body={"lease_id": ctx.lease_id, "environment": snapshot})

    def _run_child(self, ctx: RunContext, notebook: Path, output: Path, events: EventSender) -> tuple[int, str]:
        """Execute in a child process in its own session; forward its JSON-lines events.
        Returns the exit code and the last log message."""
        run = ctx.claim["run"]
        kernel: KernelChoice = ctx.claim["kernel"]
        ctx.started.set()
        Heartbeat(ctx).beat()  # tell the site the run is running now
        # Paths relative to the working directory: a run uid cannot list the folders above it.
        command = [sys.executable, "-m", "reprolab_agent.execute", notebook.name, output.name]
        command += ["--parameters", json.dumps(run["parameters"]), "--kernel", kernel.name]
        if kernel.language:
            command += ["--language", kernel.language]
        message = f"{kernel.describe()}; isolation: {self.sandbox.level}"
        events.add(
            {"kind": "log", "payload": {"message": message, "kernel": kernel.name, "kernel_chosen": kernel.chosen}}
        )
        (ctx.workdir / ".tmp").mkdir(exist_ok=True)
        # The child's watchdog reads `lifeline` and sees end of file once `held` closes: when
        # this run ends here, or when the agent dies.
        lifeline, held = os.pipe()
        user = self.sandbox.acquire()
        try:
            child = self.sandbox.spawn(
                [*command, "--lifeline", str(lifeline)],
                workdir=ctx.workdir,
                env=_child_env(ctx.workdir),
                user=user,
                pass_fds=(lifeline,),
                stdout=subprocess.PIPE,
            )
            os.close(lifeline)
            lifeline = -1
            timeout = float(run["timeout_seconds"])
            threading.Thread(target=self._watch, args=(ctx, child, timeout), daemon=True).start()
            threading.Thread(target=_report_resources, args=(child, events), daemon=True).start()
            assert child.stdout is not None
            last_log = ""
            for line in child.stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("kind") == "log":
                    last_log = str(event.get("payload", {}).get("message", ""))
                events.add(event)
            return child.wait(), last_log
        finally:
            for fd in (lifeline, held):
                if fd >= 0:
                    os.close(fd)
            self.sandbox.finish(ctx.workdir, user)

    def _watch(self, ctx: RunContext, child: subprocess.Popen[str], timeout: float) -> None:
        """Interrupt on cancel or timeout, then kill after a grace period; kill at once if the
        lease is lost (another node owns the run now)."""
        deadline = time.monotonic() + timeout
        grace = float(ctx.claim.get("heartbeat_seconds", 20))
        while child.poll() is None:
            if ctx.lease_lost.is_set():
                self.sandbox.kill(child)
                return
            if ctx.shutdown.is_set():  # the agent's grace period is over: stop, then release
                ctx.stopped_for = "shutdown"
                self.sandbox.interrupt(child)
                try:
                    child.wait(timeout=SHUTDOWN_KILL_SECONDS)
                except subprocess.TimeoutExpired:
                    self.sandbox.kill(child)
                return
            if ctx.cancel.is_set() or time.monotonic() > deadline:
                if not ctx.cancel.is_set():
                    ctx.claim["timed_out"] = True
                self.sandbox.interrupt(child)
                try:
                    child.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.sandbox.kill(child)
                return
            time.sleep(0.1)

    def _error_text(self, code: int, ctx: RunContext, last_log: str) -> str:
        if ctx.claim.get("timed_out"):
            return f"Timed out after {ctx.claim['run']['timeout_seconds']} s."
        if ctx.cancel.is_set():
            return "Cancelled on request."
        reason = {3: "The notebook raised an error", 4: "papermill or the kernel failed"}.get(code, f"exit code {code}")
        return f"{reason}: {last_log}" if last_log else f"{reason}."

    def upload(self, ctx: RunContext, output: Path) -> None:
        try:  # never through a link the run left: the agent reads what the run could not
            body = read_regular(output)
        except OSError as error:
            raise RuntimeError(f"the output notebook is not a regular file the run wrote ({error})") from error
        ctx.call(
            "PUT",
            "output",
            data=body,
            headers={
                "Content-Type": "application/x-ipynb+json",
                "X-Lease-Id": ctx.lease_id,
                "X-Content-SHA256": hashlib.sha256(body).hexdigest(),
            },
        )

    def artifacts(self, ctx: RunContext) -> list[Path]:
        """Files the notebook wrote in its working directory: not the agent's own files, not the
        inputs (unless the notebook changed them), not hidden folders; capped in count and size."""
        inputs = {f["path"]: f["sha256"] for f in ctx.claim["run"]["files"]}
        found: list[Path] = []
        total = 0
        # Regular files only, never through links: a link the run made to what its sandbox hides
        # (the site's database) would otherwise be read and uploaded by the agent for it.
        for path in regular_files(ctx.workdir):
            relative = path.relative_to(ctx.workdir).as_posix()
            if relative in ("_input.ipynb", "_output.ipynb") or any(
                part.startswith(".") for part in relative.split("/")
            ):
                continue
            if relative in inputs and sha256_file(path) == inputs[relative]:
                continue
            total += path.stat().st_size
            if len(found) >= MAX_ARTIFACTS or total > MAX_ARTIFACT_BYTES:
                log.warning("run %s: artifact limit reached; %s and later files are not kept", ctx.run_id, relative)
                break
            found.append(path)
        return found

    def compare_with_reference(self, ctx: RunContext, item: dict[str, Any], mine: Path) -> dict[str, Any] | None:
        """For a rerun in a reproduction check: compare an array this run wrote with the
        reference run's array at the same path (`item` from the claim), here where the data is
        (on the GPU when there is one). The reference comes through the content-addressed cache,
        so a node that holds it already fetches nothing. Any failure only means the site
        compares instead."""
        try:
            from . import arrays

            xp, device = arrays.array_module()
        except ImportError:  # no NumPy on this node
            log.info("run %s: NumPy is not installed; the site compares %s", ctx.run_id, item["path"])
            return None
        reference = ctx.claim["reference"]
        try:
            theirs = self.cache.fetch(self.client, item["url"], item["sha256"], ctx.claim["run_token"])
            result = arrays.compare_npy(
                str(theirs), str(mine), rtol=reference["rtol"], atol=reference["atol"], xp=xp, device=device
            )
        except (RuntimeError, GaveUp, OSError, ValueError, MemoryError) as error:
            log.warning("run %s: could not compare %s here (%s); the site will", ctx.run_id, item["path"], error)
            return None
        return {**result, "against_sha256": item["sha256"]}

    def upload_artifacts(self, ctx: RunContext, *, compare: bool = False) -> None:
        """Upload the artifacts; with `compare` (a succeeded rerun), each array that differs in
        bytes from its reference run's is compared first, and the comparison travels with it."""
        if "artifacts" not in ctx.claim["urls"]:
            return
        references = {a["path"]: a for a in (ctx.claim.get("reference") or {}).get("arrays", [])} if compare else {}
        for path in self.artifacts(ctx):
            relative = path.relative_to(ctx.workdir).as_posix()
            body = read_regular(path)
            sha256 = hashlib.sha256(body).hexdigest()
            headers = {
                "Content-Type": "application/octet-stream",
                "X-Lease-Id": ctx.lease_id,
                "X-Content-SHA256": sha256,
            }
            item = references.get(relative)
            # The very same bytes need no comparison: the site sees equal digests.
            comparison = self.compare_with_reference(ctx, item, path) if item and item["sha256"] != sha256 else None
            if comparison is not None:
                headers["X-Reference-Comparison"] = json.dumps(comparison, separators=(",", ":"))
            reply = self.client.call(
                "PUT",
                ctx.claim["urls"]["artifacts"] + urllib.parse.quote(relative),
                data=body,
                token=ctx.claim["run_token"],
                headers=headers,
            )
            if reply.status in (401, 409):
                ctx.lease_lost.set()
                raise LeaseLost(f"run {ctx.run_id}: lease lost while uploading artifacts")
            if reply.status >= 400:  # a refused artifact (bad name, too big) does not fail the run
                log.warning(
                    "run %s: artifact %s refused: HTTP %s %r", ctx.run_id, relative, reply.status, reply.body[:200]
                )

    def complete(self, ctx: RunContext, state: str, error: str = "") -> str:
        ctx.settled.set()  # the heartbeat stops renewing: this call ends the lease
        ctx.call("POST", "complete", json_body={"lease_id": ctx.lease_id, "state": state, "error": error})
        log.info("run %s: %s", ctx.run_id, state)
        return state

    def release(self, ctx: RunContext, reason: str, detail: str) -> str:
        """Hand the run back to the site, which requeues it at once (`shutdown` costs it no
        attempt). If the site cannot be told, the lease runs out and the sweeper requeues it."""
        ctx.settled.set()
        if "release" not in ctx.claim["urls"]:  # a site older than the release endpoint
            log.warning("run %s: the site cannot take it back; its lease will run out", ctx.run_id)
            return "lost"
        try:
            ctx.call(
                "POST",
                "release",
                json_body={"lease_id": ctx.lease_id, "reason": reason, "detail": detail[:2000]},
                retry_for=RELEASE_RETRY_SECONDS,
            )
        except LeaseLost:
            log.info("run %s: its lease had already ended; nothing to release", ctx.run_id)
            return "lost"
        except (GaveUp, RuntimeError) as error:
            log.warning("run %s: could not release it (%s); its lease will run out", ctx.run_id, error)
            return "lost"
        log.info("run %s: released (%s): %s", ctx.run_id, reason, detail)
        return "released"

    def hand_back(self, claim: dict[str, Any]) -> str:
        """Release a run claimed just as the agent began to stop, without starting it."""
        ctx = RunContext(claim=claim, client=self.client, workdir=self.work_root, shutdown=self.shutdown)
        return self.release(ctx, "shutdown", "claimed as the agent was stopping")


def _report_resources(child: subprocess.Popen[str], events: EventSender) -> None:
    """Every RESOURCE_SECONDS, a `resources` event for the run's process session."""
    previous = sample_session(child.pid)
    last = time.monotonic()
    while child.poll() is None and previous is not None:
        time.sleep(RESOURCE_SECONDS)
        current = sample_session(child.pid)
        now = time.monotonic()
        if current is None or child.poll() is not None:
            return
        events.add({"kind": "resources", "payload": usage(previous, current, now - last)})
        previous, last = current, now


def _child_env(workdir: Path) -> dict[str, str]:
    """A run's whole environment: allowlisted, never the agent's token or the site's secrets."""
    return run_environment(os.environ, workdir=workdir, pythonpath=agent_pythonpath())


class Agent:
    """Claims and executes runs with `concurrency` worker threads until stopped (`stop`)."""

    def __init__(
        self,
        client: Client,
        *,
        concurrency: int = 1,
        work_root: Path,
        cache_root: Path,
        wait: float = 25.0,
        grace: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.executor = RunExecutor(client, FileCache(cache_root), work_root)
        self.wait = wait
        self.grace = grace
        self.stopping = threading.Event()
        # Re-entrant: stop() runs in signal handlers, and a second signal may land inside the first.
        self._lock = threading.RLock()
        self._grace_timer: threading.Timer | None = None
        self._settle_by: float | None = None  # past this, serve() returns even if runs have not settled
        work_root.mkdir(parents=True, exist_ok=True)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming at once (a waiting claim ends now). Runs in flight get `grace` seconds
        to finish (none with `now`, or on a second call with `now`), then they are interrupted
        and released."""
        with self._lock:
            first = not self.stopping.is_set()
            self.stopping.set()
            self.client.interrupt()
            if now or self.grace <= 0:
                if self._grace_timer is not None:
                    self._grace_timer.cancel()
                self._end_grace()
            elif first:
                self._grace_timer = threading.Timer(self.grace, self._end_grace)
                self._grace_timer.daemon = True
                self._grace_timer.start()

    def _end_grace(self) -> None:
        with self._lock:
            if self.executor.shutdown.is_set():
                return
            self._settle_by = time.monotonic() + SETTLE_SECONDS
            self.executor.shutdown.set()
        log.info("grace period over: interrupting and releasing the runs in flight")

    def hello(self, capabilities: dict[str, Any]) -> dict[str, Any]:
        """Raises Interrupted when the agent is stopped while the site does not answer yet."""
        reply = self.client.call(
            "POST", "/api/v1/agent/hello/", json_body={"capabilities": capabilities}, retry_for=None, interruptible=True
        )
        if reply.status != 200:
            raise SystemExit(f"The site refused this node (HTTP {reply.status}): {reply.body[:300]!r}")
        return reply.json() or {}

    def claim(self) -> dict[str, Any] | None:
        try:
            reply = self.client.call(
                "POST",
                f"/api/v1/agent/claim/?wait={self.wait:g}",
                json_body={},
                timeout=self.wait + 30,
                retry_for=None,
                interruptible=True,  # stopping ends a waiting long-poll at once
            )
        except Interrupted:
            return None
        if reply.status == 204:
            return None
        if reply.status != 200:
            log.error("claim refused: HTTP %s %r", reply.status, reply.body[:300])
            self.stopping.wait(5)
            return None
        return reply.json()

    def worker(self, max_runs: int | None) -> None:
        done = 0
        while not self.stopping.is_set() and (max_runs is None or done < max_runs):
            claim = self.claim()
            if claim is None:
                continue
            if self.stopping.is_set():  # the claim was answered just as we began to stop
                self.executor.hand_back(claim)
                return
            log.info("run %s (attempt %s): claimed", claim["run"]["id"], claim["run"]["attempt"])
            try:
                self.executor.execute(claim)
            except Exception:
                log.exception("run %s: agent error", claim["run"]["id"])
            done += 1

    def serve(self, max_runs: int | None = None) -> None:
        """Work until stopped (or `max_runs` per worker). Returns once every run in flight has
        settled, or SETTLE_SECONDS after the grace period at the latest (the workers are daemon
        threads; a run's child dies with the agent through its own watchdog)."""
        threads = [
            threading.Thread(target=self.worker, args=(max_runs,), name=f"worker-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # short joins: the main thread stays free for signals
                if self._settle_by is not None and time.monotonic() > self._settle_by:
                    log.warning("runs still settling %.0f s after the grace period; exiting", SETTLE_SECONDS)
                    return
        if self.stopping.is_set():
            log.info("stopped")
