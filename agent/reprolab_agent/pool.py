"""Warm capacity on the agent's side: the template process, and a pool of slots, each a run's
sandbox with a run process and a kernel already waiting in it.

A slot is used by exactly one run and then discarded: a fresh working directory, a fresh
sandbox, fresh processes (nothing passes from one run to the next). The pool keeps one ready slot
per free run slot of the agent plus a spare, made in the background while runs execute, so a
claimed run normally starts on a kernel that is already up. Slots are made for the common case (no
network, no GPU); a run that needs the network or GPUs gets a slot made for it when it is claimed,
from the same template (a fork, not a boot). A run in a declared environment (reprolab_agent.envs)
gets a slot whose kernel is that environment's own Python (booted by the keeper, not forked); the
pool then keeps a spare slot for each of the few environments used last, so the next run in one
of them starts on a kernel that is already up too.

How a slot is made:
1. a fresh working directory (given to the run uid when the agent is root);
2. at level bwrap, the sandbox: bubblewrap around a placeholder (`cat` reading a pipe only the
   agent holds) whose namespaces the run process joins; closing the pipe, or the agent dying,
   ends the placeholder and with it the sandbox's PID namespace, so every process of the run;
   at the other levels the same pipe is the kernel's lifeline;
3. the template forks the run process (reprolab_agent.runproc), passed its pipes and the
   sandbox's namespaces as file descriptors;
4. the run process says `ready` once its kernel answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import nsenter, protocol
from .environment import run_environment
from .envs import Environment, EnvironmentCache, EnvironmentSpec
from .execute import EXIT, FAILED, KERNEL, READY
from .gpus import gpu_environment
from .limits import Limits
from .procs import namespace_members, processes_of, session_members
from .sandbox import RunUser, Sandbox, agent_pythonpath, hand_over, remove_tree
from .template import Template

log = logging.getLogger("reprolab_agent")

SLOT_READY_SECONDS = 90.0
# Runs once bubblewrap has built the sandbox (so "ready" means its mounts are in place), then
# reads the pipe only the agent holds, and ends when it closes.
PLACEHOLDER = ("/bin/sh", "-c", "echo ready && exec cat")


class EnvironmentGone(RuntimeError):
    """A spare was wanted for an environment that has been evicted since."""


@dataclass
class Slot:
    """A run's sandbox with its run process and kernel; used once."""

    workdir: Path
    user: RunUser | None
    events: IO[str]  # the run process's event channel
    job: int  # write end of its job channel
    hold: int  # write end of the placeholder's (or the kernel's lifeline) pipe
    placeholder: subprocess.Popen[bytes] | None  # bubblewrap, at level bwrap
    gpus: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # the run's whole environment
    run_pid: int | None = None  # the run process (papermill), outside the sandbox's PID namespace
    pid_namespace: int | None = None  # the sandbox's PID namespace (its inode), at level bwrap
    sandbox_pid: int | None = None  # the sandbox's first process (bubblewrap's init), at level bwrap
    kernel_pid: int | None = None  # its session is the run's (a cold start replaces it)
    exit_code: int | None = None  # what the run process said last, once it ended
    environment: str = ""  # the sha256 of its declared environment ("": the node's base one)
    environment_hold: contextlib.ExitStack | None = None  # keeps a spare's environment from eviction
    killed: bool = False
    discarded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, job: dict[str, Any]) -> None:
        with self._lock:
            if self.killed:
                raise RuntimeError("the slot was ended before its job started")
            os.write(self.job, (json.dumps(job) + "\n").encode())

    def interrupt(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if not self.killed:
                os.write(self.job, b'{"interrupt": true}\n')

    def kill(self) -> None:
        """End every process of the run now: the sandbox's PID namespace (at level bwrap), the
        kernel's session (its lifeline), the run process (its job channel)."""
        with self._lock:  # the readiness timer and the run may both get here
            self.killed = True
            for fd in (self.hold, self.job):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.hold = self.job = -1
        if self.placeholder is not None and self.placeholder.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.placeholder.pid, signal.SIGKILL)

    def members(self) -> list[int]:
        """Every process of the run now: those of its run uid (a root agent's), or of its
        sandbox's PID namespace, or else of its kernel's session; and the run process."""
        if self.user is not None:
            return processes_of(self.user.uid)
        if self.pid_namespace is not None:
            found = namespace_members(self.pid_namespace)
        else:
            found = session_members(self.kernel_pid) if self.kernel_pid else []
        return [*found, *([self.run_pid] if self.run_pid else [])]

    def tmpfs_bytes(self) -> int:
        """What the run stored in its sandbox's memory-backed /tmp and /dev/shm: memory that
        no process's resident set shows."""
        if self.sandbox_pid is None:
            return 0
        used = 0
        for place in ("tmp", "dev/shm"):
            with contextlib.suppress(OSError):
                fs = os.statvfs(f"/proc/{self.sandbox_pid}/root/{place}")
                used += (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        return used

    def lines(self) -> Iterator[dict[str, Any]]:
        """The run process's events, until its channel ends."""
        for line in self.events:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event

    def follow(self) -> Iterator[dict[str, Any]]:
        """The job's events, until the run process ends; what it says of itself is kept here
        instead: its exit code, and the kernel of a cold start (whose session is now the run's)."""
        for event in self.lines():
            payload = event.get("payload") or {}
            if event.get("kind") == EXIT:
                self.exit_code = int(payload.get("code", -1))
            elif event.get("kind") == KERNEL:
                self.kernel_pid = payload.get("kernel_pid")
            else:
                yield event


class WarmPool:
    """Ready slots for an agent's runs; see the module doc."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        work_root: Path,
        limits: Limits,
        concurrency: int,
        spare: int = 1,
        env: dict[str, str] | None = None,
        environments: EnvironmentCache | None = None,
        environment_spares: int = 2,
    ) -> None:
        self.sandbox = sandbox
        self.work_root = work_root
        self.limits = limits
        self.concurrency = concurrency
        self.spare = spare
        self.env_source = dict(os.environ if env is None else env)
        self.template = Template(
            env=run_environment(self.env_source, workdir=work_root, pythonpath=agent_pythonpath()), cwd=work_root
        )
        self.environments = environments
        self.environment_spares = environment_spares
        self.warm_kernels: list[str] = []
        self._ready: list[Slot] = []  # base slots and environment spares (Slot.environment)
        self._recent: OrderedDict[str, EnvironmentSpec] = OrderedDict()  # environments used last
        self._starting_environments: set[str] = set()
        self._starting = 0
        self._in_use = 0
        self._closing = False
        self._failures = 0
        self.idle = False  # the filler waits: ready and starting slots meet the target
        self._cond = threading.Condition()
        self._filler: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, fill: bool = True) -> None:
        """Start the template, and (with `fill`) the background filling of ready slots."""
        self.work_root.mkdir(parents=True, exist_ok=True)
        hello = self.template.start()
        self.warm_kernels = list(hello.get("warm_kernels") or [])
        if hello.get("missing"):
            log.warning("warm template: could not import %s; kernels start cold", ", ".join(hello["missing"]))
        log.info(
            "warm template ready in %.1f s (kernels kept warm: %s)",
            hello.get("import_seconds", 0),
            self.warm_kernels or "none",
        )
        if fill:
            self._filler = threading.Thread(target=self._fill, name="warm-pool", daemon=True)
            self._filler.start()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            ready, self._ready = self._ready, []
            self._cond.notify_all()
        for slot in ready:
            self.discard(slot)
        if self._filler is not None:
            self._filler.join(timeout=SLOT_READY_SECONDS)
        self.template.stop()

    @property
    def target(self) -> int:
        """Ready base slots wanted now: one per free run slot, plus the spare."""
        return max(0, self.concurrency - self._in_use) + self.spare

    def _base_wanted(self) -> bool:
        return sum(1 for s in self._ready if not s.environment) + self._starting < self.target

    def _base_ready(self) -> Slot | None:
        return next((s for s in self._ready if not s.environment), None)

    def _environment_wanted(self) -> str | None:
        """An environment used lately that has no spare slot, ready or coming (under the lock)."""
        covered = {s.environment for s in self._ready} | self._starting_environments
        return next((sha for sha in reversed(self._recent) if sha not in covered), None)

    def _remember(self, spec: EnvironmentSpec) -> None:
        """A run used this environment: keep a spare for it (and for a few others used lately)."""
        self._recent[spec.sha256] = spec
        self._recent.move_to_end(spec.sha256)
        while len(self._recent) > self.environment_spares:
            stale, _ = self._recent.popitem(last=False)
            for slot in [s for s in self._ready if s.environment == stale]:
                self._ready.remove(slot)
                threading.Thread(target=self._drop, args=(slot,), daemon=True).start()

    def _drop(self, slot: Slot) -> None:
        self.discard(slot)
        self.remove(slot)

    # -- taking and returning slots -----------------------------------------------------------------
    def take(self, *, network: bool = False, gpus: Sequence[int] = (), environment: Environment | None = None) -> Slot:
        """A slot for a run: a ready one from the pool, or one made now (for a run that needs the
        network or GPUs, or when none is ready or coming)."""
        if environment is not None:
            with self._cond:
                self._in_use += 1
                if self.environment_spares:
                    self._remember(environment.spec)
                spare = next((s for s in self._ready if s.environment == environment.sha256), None)
                if spare is not None and not network and not gpus:
                    self._ready.remove(spare)
                else:
                    spare = None
                self._cond.notify_all()
            if spare is not None:
                return spare
            try:
                return self.make(network=network, gpus=tuple(gpus), environment=environment)
            except BaseException:
                self.give_back()
                raise
        if network or gpus:
            with self._cond:
                self._in_use += 1
            try:
                return self.make(network=network, gpus=tuple(gpus))
            except BaseException:
                self.give_back()
                raise
        with self._cond:
            self._in_use += 1
            deadline = time.monotonic() + SLOT_READY_SECONDS
            while not self._base_ready() and self._starting and not self._closing and time.monotonic() < deadline:
                self._cond.wait(timeout=0.5)
            slot = self._base_ready()
            if slot is not None:
                self._ready.remove(slot)
            self._cond.notify_all()
        if slot is not None:
            return slot
        try:
            return self.make()
        except BaseException:
            self.give_back()
            raise

    def give_back(self) -> None:
        """A run is over (its slot is discarded by `discard`): the pool may make another."""
        with self._cond:
            self._in_use = max(0, self._in_use - 1)
            self._cond.notify_all()

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._base_wanted() and self._environment_wanted() is None:
                    self.idle = True  # nothing to make: the pool is as full as it should be
                    self._cond.wait()
                self.idle = False
                if self._closing:
                    return
                sha = "" if self._base_wanted() else self._environment_wanted()
                if sha:
                    self._starting_environments.add(sha)
                    spec = self._recent[sha]
                else:
                    self._starting += 1
            slot: Slot | None = None
            try:
                slot = self._make_spare(spec) if sha else self.make()
                self._failures = 0
            except EnvironmentGone:
                with self._cond:
                    self._recent.pop(sha or "", None)  # evicted: normal, no back-off; a run's use adds it back
            except Exception as error:
                self._failures += 1
                log.warning("warm pool: could not make a slot (%s)", error)
                if sha:
                    with self._cond:
                        self._recent.pop(sha, None)  # not again and again: the next run's use adds it back
            finally:
                with self._cond:
                    if sha:
                        self._starting_environments.discard(sha)
                    else:
                        self._starting -= 1
                    if slot is not None and not self._closing and (not sha or sha in self._recent):
                        self._ready.append(slot)
                        slot = None
                    self._cond.notify_all()
            if slot is not None:  # closing meanwhile, or its environment forgotten
                self._drop(slot)
            if self._failures:
                time.sleep(min(30.0, 0.5 * 2**self._failures))

    def _make_spare(self, spec: EnvironmentSpec) -> Slot:
        """A slot ahead of time for a built environment, holding it from eviction; EnvironmentGone
        when it is no longer built (evicted since its run)."""
        assert self.environments is not None  # only a run's environment is remembered
        hold = contextlib.ExitStack()
        try:
            path = hold.enter_context(self.environments.hold(spec.sha256))
            if path is None:
                raise EnvironmentGone(f"environment {spec.short} is no longer built here")
            environment = Environment(spec, path, built=False, seconds=0.0)
            slot = self.make(environment=environment)
        except BaseException:
            hold.close()
            raise
        slot.environment_hold = hold
        return slot

    # -- making and discarding one slot ---------------------------------------------------------------
    def make(
        self, *, network: bool = False, gpus: tuple[int, ...] = (), environment: Environment | None = None
    ) -> Slot:
        """A new slot, ready (its kernel answered), or an exception saying why not. In a declared
        `environment`, its kernel is the environment's Python, which sees only the environment's
        packages and this package (for `record`)."""
        self.template.ensure()
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_root))
        user = self.sandbox.acquire()
        hold_read, hold = os.pipe()
        events_read, events_write = os.pipe()
        job_read, job = os.pipe()
        placeholder: subprocess.Popen[bytes] | None = None
        namespaces: list[tuple[str, int]] = []
        pid_namespace: int | None = None
        sandbox_pid: int | None = None
        slot: Slot | None = None
        pythonpath = agent_pythonpath()
        read_only: list[Path] = []
        if environment is not None:
            assert self.environments is not None
            pythonpath = str(self.environments.agent_path())
            read_only = [environment.path, Path(pythonpath)]
        try:
            (workdir / protocol.TMP_FOLDER).mkdir()
            if user is not None:
                hand_over(workdir, user.uid, user.gid)
            if self.sandbox.level == "bwrap":
                placeholder, sandbox_pid, namespaces = self._sandbox(
                    workdir, hold_read, network=network, gpus=bool(gpus), read_only=read_only
                )
                pid_namespace = next((os.fstat(fd).st_ino for name, fd in namespaces if name == "pid"), None)
            env = run_environment(self.env_source, workdir=workdir, pythonpath=pythonpath)
            env.update(gpu_environment(gpus))
            spec = {
                "workdir": str(workdir),
                "env": env,
                "limits": self.limits.to_json(),
                "uid": user.uid if user else None,
                "gid": user.gid if user else None,
                "kernel_python": str(environment.python) if environment is not None else None,
            }
            fds = [("events", events_write), ("job", job_read)]
            fds += [(f"ns:{name}", fd) for name, fd in namespaces]
            if placeholder is None:
                fds.append(("lifeline", hold_read))
            run_pid = self.template.fork(spec, fds)
            slot = Slot(
                workdir=workdir,
                user=user,
                events=os.fdopen(events_read, "r"),
                job=job,
                hold=hold,
                placeholder=placeholder,
                gpus=gpus,
                env=env,
                run_pid=run_pid,
                pid_namespace=pid_namespace,
                sandbox_pid=sandbox_pid,
                environment=environment.sha256 if environment is not None else "",
            )
        finally:
            for fd in (hold_read, events_write, job_read, *(fd for _, fd in namespaces)):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if slot is None:
                for fd in (events_read, job, hold):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if placeholder is not None:
                    _end(placeholder)
                self.sandbox.finish(workdir, user)
                remove_tree(workdir)
        try:
            self._await_ready(slot)
        except BaseException:
            self.remove(slot)
            raise
        return slot

    def _sandbox(
        self, workdir: Path, hold_read: int, *, network: bool, gpus: bool, read_only: Sequence[Path] = ()
    ) -> tuple[subprocess.Popen[bytes], int, list[tuple[str, int]]]:
        """bubblewrap around the placeholder; returns it and its namespaces (open fds)."""
        info_read, info_write = os.pipe()
        args = self.sandbox.bwrap_args(
            workdir,
            None,
            network=network,
            gpus=gpus,
            tmp_bytes=self.limits.workdir_mb * 2**20,
            read_only=read_only,
            die_with_parent=False,  # the placeholder's pipe ends it with the agent, whichever thread made it
        )
        args = [*args[:-1], "--info-fd", str(info_write), "--", *PLACEHOLDER]
        try:
            process = subprocess.Popen(
                args,
                stdin=hold_read,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(info_write,),
                cwd=workdir,
                # Nothing of the agent's environment: at a non-root agent the run's uid can read
                # the placeholder's /proc/N/environ.
                env={"PATH": os.environ.get("PATH", os.defpath)},
                start_new_session=True,
            )
        finally:
            os.close(info_write)
        with os.fdopen(info_read, "rb") as info_file:
            info = info_file.read()
        assert process.stdout is not None
        started = process.stdout.readline() == b"ready\n"  # the sandbox is built
        process.stdout.close()
        try:
            if not started:
                raise ValueError("the placeholder did not start")
            child = int(json.loads(info)["child-pid"])
        except (ValueError, KeyError, TypeError):
            _end(process)
            said = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
            raise RuntimeError(f"bubblewrap did not start the sandbox: {said or info!r}") from None
        return process, child, nsenter.join_plan(child)

    def _await_ready(self, slot: Slot) -> None:
        """Read the slot's events up to `ready`; discard it and raise if it fails instead, or
        does not get there in SLOT_READY_SECONDS (then its processes are ended, which ends its
        event channel)."""
        too_late = threading.Timer(SLOT_READY_SECONDS, slot.kill)
        too_late.daemon = True
        too_late.start()
        try:
            self._read_until_ready(slot)
        finally:
            too_late.cancel()
        if slot.killed:  # the timer fired as `ready` came: too late all the same
            self.discard(slot)
            raise RuntimeError(f"the run process was not ready within {SLOT_READY_SECONDS:g} s")

    def _read_until_ready(self, slot: Slot) -> None:
        for event in slot.lines():
            kind = event.get("kind")
            if kind == READY:
                slot.kernel_pid = (event.get("payload") or {}).get("kernel_pid")
                return
            if kind in (FAILED, EXIT):
                self.discard(slot)
                raise RuntimeError(
                    f"the run process failed to start: {(event.get('payload') or {}).get('message', kind)}"
                )
        self.discard(slot)
        raise RuntimeError("the run process ended before it was ready")

    def discard(self, slot: Slot) -> None:
        """End the slot's processes and give its uid and files back (the caller removes the
        working directory once it has read what it needs from it). Once only: the uid it frees
        may be another slot's a moment later."""
        if slot.discarded:
            return
        slot.discarded = True
        slot.kill()
        if slot.placeholder is not None:
            _end(slot.placeholder)
        with contextlib.suppress(OSError):
            slot.events.close()
        if slot.environment_hold is not None:
            slot.environment_hold.close()
        self.sandbox.finish(slot.workdir, slot.user)

    def remove(self, slot: Slot) -> None:
        remove_tree(slot.workdir)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if process.stderr is not None:
        process.stderr.close()
