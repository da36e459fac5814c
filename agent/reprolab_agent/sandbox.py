"""Isolation of a run's processes from the node that runs them.

A notebook is untrusted code. Its kernel and everything the kernel starts run inside one of these
levels, the strongest that works on this machine (the warm pool, reprolab_agent.pool, builds a
sandbox per run ahead of it; `spawn` starts a plain command in one, for the probe):

- ``bwrap``: bubblewrap namespaces (mount, PID, IPC, UTS, and network unless the run may use it;
  a user namespace too for a non-root agent). The run sees a read-only system (/usr, /etc, /sys), the
  Python environment and this package read-only, a fresh /tmp, /dev and /proc (its own PID
  namespace: no agent, no other run), and its own working directory, writable. Nothing else of
  the host exists for it: not the site's directory, not the agent's state, cache or token, not
  the homes. When the agent runs as root, the run also runs as a dedicated unprivileged uid with
  no capabilities and no_new_privs.
- ``uid``: (root agents without a working bubblewrap) the run runs as a dedicated unprivileged
  uid, no capabilities, no_new_privs; the protected paths are closed to others by their modes
  (the Python environment and the working directories stay reachable, unlistable).
- ``none``: the run runs as the agent's own user and can read whatever that user can. Reported so
  the site can show it (and runs can require more).

Only ``bwrap`` restricts the network. At every level the kernel gets resource limits
(reprolab_agent.limits) and a seccomp filter (reprolab_agent.nsenter).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import Unavailable
from .procs import _unassigned, group_members, processes_of, reap
from .runfiles import check_passable, close_to_others, hand_over, read_regular, regular_files, remove_tree

__all__ = [  # the helpers moved to procs and runfiles are still reached through here
    "Sandbox",
    "Unavailable",
    "agent_pythonpath",
    "check_passable",
    "close_to_others",
    "detect",
    "group_members",
    "hand_over",
    "processes_of",
    "read_regular",
    "reap",
    "regular_files",
    "remove_tree",
]

log = logging.getLogger("reprolab_agent")

LEVELS = ("bwrap", "uid", "none")
SANDBOXED = "sandboxed"  # `detect`'s choice: bwrap or uid, refusing to run unisolated
# Run uids (and gids of the same number) handed out one per live run on this machine. They must
# belong to nobody: any that has a passwd or group entry is skipped.
RUN_UID_BASE = int(os.environ.get("REPROLAB_RUN_UID_BASE", "60100"))
RUN_UID_COUNT = 64
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
PROBE_SECONDS = 60
LOCK_DIR = Path("/run/reprolab-agent")

# Run inside the sandbox at start: the interpreter, this package and papermill load, the working
# directory is reachable by its absolute path (the kernel chdirs to it) and writable, and no
# protected path shows anything but the way to what the run may use.
PROBE = """
import importlib.util, json, os, sys
import reprolab_agent.execute
if importlib.util.find_spec("papermill") is None:
    sys.exit("papermill cannot be imported")
os.chdir(os.getcwd())
with open("probe", "w") as f:
    f.write("ok")
protected, allowed = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for path in protected:
    try:
        if os.path.isdir(path):
            shown = [os.path.join(path, entry) for entry in os.listdir(path)]
        else:
            open(path, "rb").close()
            shown = [path]
    except OSError:
        continue
    for item in shown:
        if not any(a == item or a.startswith(item + "/") for a in allowed):
            sys.exit(f"{item} is readable from the sandbox")
print("ok")
"""


@dataclass(frozen=True)
class RunUser:
    """The uid a run runs as, held (by a lock on this machine) while the run lives."""

    uid: int
    gid: int
    lock: IO[bytes] = field(compare=False, repr=False)


def runtime_paths() -> tuple[Path, ...]:
    """What a run needs to read: the Python environment (venv and base installation), the
    operator's kernel folders (JUPYTER_PATH) and this package (only its own directory, never the
    folder around it)."""
    prefixes = (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    kernels = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p and os.path.isdir(p)]
    paths = {Path(os.path.realpath(p)) for p in (*prefixes, *kernels)}
    package = Path(__file__).resolve().parent
    if not any(package.is_relative_to(p) for p in paths):
        paths.add(package)
    return tuple(sorted(p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)))


def agent_pythonpath() -> str:
    """The folder holding this package, for the child's PYTHONPATH."""
    return str(Path(__file__).resolve().parent.parent)


class Sandbox:
    """Wraps a run's child command at one isolation level. `spawn` starts it, `interrupt` and
    `kill` signal it, `finish` cleans up after it (every process of its uid, the ownership of its
    working directory)."""

    def __init__(self, level: str, *, protect: Iterable[Path | str] = (), work_root: Path | None = None) -> None:
        if level not in LEVELS:
            raise ValueError(f"isolation must be one of {', '.join(LEVELS)}")
        self.level = level
        self.protect = tuple(sorted({Path(os.path.realpath(p)) for p in protect}))
        self.work_root = Path(os.path.realpath(work_root)) if work_root else None
        self.runtime = runtime_paths()
        self.privileged = os.geteuid() == 0
        self.bwrap = shutil.which("bwrap") or ""
        self.setpriv = shutil.which("setpriv") or ""
        self.uids = [u for u in range(RUN_UID_BASE, RUN_UID_BASE + RUN_UID_COUNT) if _unassigned(u)]
        self.notes: list[str] = []  # why stronger levels were not used
        self.bwrap_disables_userns = False  # bubblewrap >= 0.8 can forbid nested user namespaces
        self.stuck: list[IO[bytes]] = []  # locks of run uids whose processes would not die: never reused

    @property
    def drops_uid(self) -> bool:
        """Runs get a uid of their own (the agent is root and the level is not none)."""
        return self.privileged and self.level != "none"

    @property
    def describe(self) -> str:
        if self.level == "bwrap":
            who = "a run uid of their own, " if self.drops_uid else ""
            return f"bwrap: runs in {who}their own mount, PID and IPC namespaces"
        if self.level == "uid":
            return "uid: runs as a uid of their own; protected paths closed to others"
        return "none: runs can read everything this agent's user can"

    # -- one run --------------------------------------------------------------------------------

    def acquire(self) -> RunUser | None:
        """A uid no other live run on this machine holds (None at level none, or when runs share
        the agent's uid)."""
        if not self.drops_uid:
            return None
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        info = LOCK_DIR.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise Unavailable(f"{LOCK_DIR} is not a private root-owned folder")
        for uid in self.uids:
            handle = open(LOCK_DIR / f"uid-{uid}.lock", "wb")  # noqa: SIM115 - held while the run lives
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                reap(uid)  # a leftover of a run whose agent died
            except RuntimeError:  # it will not die: keep this uid locked out, take another
                self.stuck.append(handle)
                continue
            return RunUser(uid=uid, gid=uid, lock=handle)
        raise Unavailable(f"all {len(self.uids)} run uids are in use on this machine")

    def spawn(
        self,
        argv: Sequence[str],
        *,
        workdir: Path,
        env: dict[str, str],
        user: RunUser | None,
        pass_fds: Sequence[int] = (),
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[str]:
        """Start the command in its own session, in `workdir`, at this level."""
        workdir = Path(os.path.realpath(workdir))
        if user is not None:
            hand_over(workdir, user.uid, user.gid)
        command = list(argv)
        if self.level == "bwrap":
            command = self.bwrap_args(workdir, user) + command
        elif self.level == "uid":
            if user is None:
                raise Unavailable("level uid needs a run uid")
            command = self._setpriv(user) + command
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            umask=0o077 if self.level != "none" else -1,
        )

    def interrupt(self, child: subprocess.Popen[str]) -> None:
        """SIGINT to the run's process group. Under bwrap, not to bwrap's own outer process: it
        would die of it and take the run with it before papermill could stop politely."""
        if self.level != "bwrap":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGINT)
            return
        for pid in group_members(child.pid):
            if pid != child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)

    def kill(self, child: subprocess.Popen[str]) -> None:
        """SIGKILL to the run's process group (under bwrap this ends its PID namespace, kernel
        included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)

    def finish(self, workdir: Path, user: RunUser | None) -> None:
        """After the child ended: no process of the run's uid survives, its files go back to the
        agent (a later run with the same uid cannot reach them), the uid is free again."""
        if user is None:
            return
        try:
            reap(user.uid)
        except RuntimeError as error:  # some process would not die: its uid is never lent again
            log.error("%s; uid %s stays locked out", error, user.uid)
            self.stuck.append(user.lock)
            hand_over(Path(os.path.realpath(workdir)), os.geteuid(), os.getegid(), files=True)
            return
        try:
            hand_over(Path(os.path.realpath(workdir)), os.geteuid(), os.getegid(), files=True)
        finally:
            user.lock.close()

    # -- how ------------------------------------------------------------------------------------

    def _setpriv(self, user: RunUser) -> list[str]:
        return [
            self.setpriv,
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]

    def bwrap_args(
        self,
        workdir: Path,
        user: RunUser | None,
        *,
        network: bool = True,
        gpus: bool = True,
        tmp_bytes: int = 0,
        die_with_parent: bool = True,
        read_only: Sequence[Path] = (),
    ) -> list[str]:
        """bwrap's arguments, up to and including the `--` before the command. Order matters:
        system, masks over protected paths inside it, the Python environment, masks inside that,
        then the working directory. Without `network` the sandbox has a network namespace of
        its own (a loopback only); without `gpus`, no GPU device exists in it; `tmp_bytes`
        bounds its private /tmp and /dev/shm (memory-backed)."""
        layout = _Layout()
        args = [self.bwrap, *(["--die-with-parent"] if die_with_parent else [])]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not network:
            args += ["--unshare-net"]
        if not self.privileged:
            args += ["--unshare-user"] + (["--disable-userns"] if self.bwrap_disables_userns else [])
        for system in SYSTEM_DIRS:
            if os.path.islink(system):
                args += ["--symlink", os.readlink(system), system]
            elif os.path.isdir(system):
                args += layout.bind("--ro-bind", Path(system))
        resolv = Path(os.path.realpath("/etc/resolv.conf"))
        if resolv.is_file() and not layout.covers(resolv):
            args += layout.bind("--ro-bind", resolv)
        # Fresh, sandbox-private /proc, /dev, /dev/shm and /tmp (not the host's).
        private_tmp = ["/dev/shm", "/tmp"]  # noqa: S108 - new tmpfs mounts inside the sandbox
        args += ["--proc", "/proc", "--dev", "/dev"]
        for tmp in private_tmp:
            args += ["--perms", "1777", *(["--size", str(tmp_bytes)] if tmp_bytes else []), "--tmpfs", tmp]
        layout.tmpfs += [Path("/proc"), Path("/dev"), *map(Path, private_tmp)]
        for device in sorted(glob.glob("/dev/nvidia*")) if gpus else ():  # GPUs stay usable
            args += ["--dev-bind", device, device]
        args += layout.masks(self.protect)
        for path in (*self.runtime, *read_only):  # read_only: the run's declared environment
            args += layout.bind("--ro-bind", path)
        args += layout.masks(self.protect)
        args += layout.bind("--bind", workdir)
        args += ["--chdir", str(workdir)]
        if user is not None and self.privileged:
            return [*args, "--", *self._setpriv(user)]
        return [*args, "--"]


@dataclass
class _Layout:
    """What is mounted where in the sandbox being described, so that parent folders are made
    (traversable by the run) and masks go only where something would show."""

    host: list[Path] = field(default_factory=list)  # host folders and files bound in
    tmpfs: list[Path] = field(default_factory=list)
    made: set[Path] = field(default_factory=set)
    masked: set[Path] = field(default_factory=set)

    def covers(self, path: Path) -> bool:
        return any(path.is_relative_to(h) for h in self.host)

    def _parents(self, path: Path) -> list[str]:
        args: list[str] = []
        for parent in reversed(path.parents):
            if parent == Path("/") or parent in self.made or parent in self.host or parent in self.tmpfs:
                continue
            if self.covers(parent):
                continue  # exists there already (read-only)
            args += ["--perms", "0755", "--dir", str(parent)]
            self.made.add(parent)
        return args

    def bind(self, option: str, path: Path) -> list[str]:
        args = [*self._parents(path), option, str(path), str(path)]
        self.host.append(path)
        return args

    def masks(self, protect: Iterable[Path]) -> list[str]:
        """Cover each protected path that the mounts so far would show: an empty tmpfs over a
        folder, /dev/null over a file."""
        args: list[str] = []
        for path in protect:
            if path in self.masked or not self.covers(path) or not os.path.lexists(path):
                continue
            self.masked.add(path)
            if path.is_dir():
                args += ["--tmpfs", str(path)]
                self.tmpfs.append(path)
            else:
                args += ["--ro-bind", "/dev/null", str(path)]
        return args


# -- choosing a level ---------------------------------------------------------------------------


def probe(sandbox: Sandbox) -> None:
    """Run the probe inside the sandbox from a working directory like a run's; raise
    Unavailable saying what failed."""
    if sandbox.level == "none":
        return
    if sandbox.work_root is None:
        raise Unavailable("no work root to probe in")
    sandbox.work_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="probe-", dir=sandbox.work_root))
    allowed = [*map(str, sandbox.runtime), str(workdir)]
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(workdir), "PYTHONPATH": agent_pythonpath()}
    command = [sys.executable, "-c", PROBE, json.dumps([str(p) for p in sandbox.protect]), json.dumps(allowed)]
    user: RunUser | None = None
    try:
        user = sandbox.acquire()
        child = sandbox.spawn(
            command, workdir=workdir, env=env, user=user, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = child.communicate(timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            sandbox.kill(child)
            child.wait()
            raise Unavailable(f"the probe did not finish in {PROBE_SECONDS} s") from None
        if child.returncode != 0 or out.strip() != "ok" or not (workdir / "probe").is_file():
            said = (err.strip().splitlines() or ["nothing"])[-1][:500]
            raise Unavailable(f"the probe failed (exit {child.returncode}): {said}")
    except OSError as error:
        raise Unavailable(str(error)) from error
    finally:
        sandbox.finish(workdir, user)
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(level: str, sandbox: Sandbox) -> None:
    if level == "bwrap":
        if not sandbox.bwrap:
            raise Unavailable("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
        if sandbox.privileged and not sandbox.setpriv:
            raise Unavailable("setpriv (util-linux) is needed to drop root")
        usage = subprocess.run([sandbox.bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False)
        sandbox.bwrap_disables_userns = "--disable-userns" in usage.stdout
    if level in ("bwrap", "uid") and sandbox.privileged and not sandbox.uids:
        raise Unavailable(f"no free run uid in {RUN_UID_BASE}..{RUN_UID_BASE + RUN_UID_COUNT - 1}")
    if level == "uid":
        if not sandbox.privileged:
            raise Unavailable("only a root agent can run runs as another uid")
        if not sandbox.setpriv:
            raise Unavailable("setpriv (util-linux) is not installed")
        if sandbox.work_root is None:
            raise Unavailable("no work root")
        sandbox.work_root.mkdir(parents=True, exist_ok=True)
        close_to_others(sandbox.protect, [*sandbox.runtime, sandbox.work_root])
        check_passable([*sandbox.runtime, sandbox.work_root])
        os.chmod(sandbox.work_root, 0o711)  # noqa: S103 - runs pass through to their own folder, never list it


def detect(prefer: str = "auto", *, protect: Iterable[Path | str], work_root: Path) -> Sandbox:
    """The strongest level that works here (or exactly `prefer`), probed once at start;
    `sandboxed` is the strongest of the levels that isolate (never `none`)."""
    if prefer == "auto":
        order = list(LEVELS)
    elif prefer == SANDBOXED:
        order = [level for level in LEVELS if level != "none"]
    else:
        order = [prefer]
    notes: list[str] = []
    for level in order:
        sandbox = Sandbox(level, protect=protect, work_root=work_root)
        try:
            _prepare(level, sandbox)
            probe(sandbox)
        except Unavailable as error:
            notes.append(f"{level}: {error}")
            continue
        sandbox.notes = notes
        return sandbox
    raise Unavailable("; ".join(notes))
