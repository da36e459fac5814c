"""Declared environments on a node: one virtual environment per lock sha256, built with uv.

The site resolves a declaration into a lock (exact versions and hashes; reprolab apps.environments)
and sends it with the claim. Here the lock is built once into `root/<sha256>/` and reused by every
later run that names it:

- a run holds a shared lock on `root/<sha256>.lock` while it runs, so eviction (which takes it
  exclusively, without waiting) never removes an environment in use;
- a build takes an exclusive lock on `root/<sha256>.build`; a run that needs the same environment
  meanwhile waits for that lock and then uses the finished environment (one build, shared);
- `.reprolab-ready` is written last: a folder without it is a build that did not finish (a killed
  agent), removed and built again;
- uv's cache (`root/.uv-cache`) is shared by every build, so a package is downloaded once per node;
- nothing is built from source (`--no-build`, as on the site): installing runs no package's code;
- the environments are bounded (`max_bytes`): past it, the least recently used ones not in use
  are removed, and uv's cache is pruned.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import protocol
from .limits import tree_entries

log = logging.getLogger("reprolab_agent")

READY_MARK = ".reprolab-ready"
UV_CACHE = ".uv-cache"
LOCKS = ".locks"  # closed to runs: a run uid must not hold a build or an environment hostage
MESSAGE_LINES = 40  # of the installer's output, in a failed build's message
# The installer's words for "the index could not be reached" (uv's, by the reqwest/hyper errors).
UNREACHABLE = (
    "dns error",
    "Connection refused",
    "error sending request",
    "Failed to fetch",
    "timed out",
    "os error 101",
)
# Import names whose distribution is called otherwise: what a declaration must name.
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "Bio": "biopython",
    "umap": "umap-learn",
    "attr": "attrs",
}


class BuildFailed(RuntimeError):
    """The environment could not be built here; the message says why (the installer's words)."""


class BuildStopped(BuildFailed):
    """The build was stopped (its run was cancelled, timed out, or the agent is stopping)."""


STOP_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class EnvironmentSpec:
    sha256: str
    lock: str
    layered: bool = False
    requires_python: str = ""
    python_version: str = ""

    @classmethod
    def from_claim(cls, data: Any) -> EnvironmentSpec | None:
        """The claim's environment, or None (the node's base environment). The lock must be the
        text its sha256 names: that sha256 is the folder it is built in."""
        if not isinstance(data, Mapping) or not data.get("sha256"):
            return None
        lock = str(data.get("lock") or "")
        sha256 = str(data["sha256"])
        if hashlib.sha256(lock.encode()).hexdigest() != sha256:
            raise BuildFailed(f"the environment's lock does not match its sha256 {sha256[:12]}")
        return cls(
            sha256=sha256,
            lock=lock,
            layered=bool(data.get("layered")),
            requires_python=str(data.get("requires_python") or ""),
            python_version=str(data.get("python_version") or ""),
        )

    @property
    def short(self) -> str:
        return self.sha256[:12]


@dataclass(frozen=True)
class Environment:
    spec: EnvironmentSpec
    path: Path
    built: bool  # this use built it (False: built before and reused)
    seconds: float  # the build's, or the wait for another run's build

    @property
    def sha256(self) -> str:
        return self.spec.sha256

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def site_packages(self) -> Path:
        return self.path / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def uv_binary() -> str | None:
    """uv, from its Python package (a dependency of the agent) or the PATH; None if neither."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def missing_module_hint(message: str, *, declared: bool) -> str:
    """For a notebook that raised ModuleNotFoundError: what to declare, and where."""
    if not message.startswith("ModuleNotFoundError"):
        return ""
    module = message.split("'")[1] if message.count("'") >= 2 else ""
    top = module.split(".")[0]
    if not top:
        return ""
    package = DISTRIBUTIONS.get(top, top)
    where = "its declared environment lacks it" if declared else "the run used the node's base environment"
    return (
        f" The module {top!r} is not installed: {where}. Declare the package that provides it ({package}) in a "
        "requirements.txt or pyproject.toml, beside the notebook or as the project's environment "
        "(PUT /api/v1/projects/<slug>/environment/)."
    )


class EnvironmentCache:
    """The node's built environments; see the module doc."""

    def __init__(self, root: Path, index_url: str | None = None, max_bytes: int = 0, uv: str | None = None) -> None:
        self.root = root
        self.index_url = index_url or None
        self.max_bytes = max_bytes
        self.uv = uv or uv_binary()
        # Runs (a run uid, at level uid) may pass through the root to their own environment, not
        # list it; the locks and uv's cache are the agent's alone.
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        for private in (LOCKS, UV_CACHE):
            (self.root / private).mkdir(mode=0o700, exist_ok=True)
            (self.root / private).chmod(0o700)
        self._evicting = threading.Lock()

    def _lock_file(self, sha256: str, kind: str) -> Path:
        return self.root / LOCKS / f"{sha256}.{kind}"

    @property
    def available(self) -> bool:
        return self.uv is not None

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def is_ready(self, sha256: str) -> bool:
        return (self.path(sha256) / READY_MARK).is_file()

    @contextlib.contextmanager
    def use(
        self,
        spec: EnvironmentSpec,
        say: Callable[[str], None] = lambda message: None,
        stop: Callable[[], str] = lambda: "",
    ) -> Iterator[Environment]:
        """The environment of `spec`, built first if no run built it before; held (not evicted)
        until the block ends. `stop` says why to give up a build now ("" while it should go on):
        the installer is killed and BuildStopped raised; another run waiting for the same build
        then builds it itself."""
        misfit = protocol.python_misfit(
            platform.python_version(), minimum=spec.python_version, requires_python=spec.requires_python
        )
        if misfit:
            raise BuildFailed(misfit)
        started = time.monotonic()
        with open(self._lock_file(spec.sha256, "use"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)  # in use from here on: eviction may not take it
            built = False
            if not self.is_ready(spec.sha256):
                with open(self._lock_file(spec.sha256, "build"), "a+b") as building:
                    if not _try_lock(building, fcntl.LOCK_EX):
                        say(f"environment {spec.short}: waiting for another run's build of it")
                        _wait_for_lock(building, stop)
                    if not self.is_ready(spec.sha256):  # nobody built it meanwhile: ours to build
                        self._build(spec, say, stop)
                        built = True
            environment = Environment(spec, self.path(spec.sha256), built, time.monotonic() - started)
            if not built:
                say(f"environment {spec.short}: reused (built on this node before)")
            os.utime(self.path(spec.sha256) / READY_MARK)  # recently used, for eviction
            if built:
                self.evict(keep=spec.sha256)
            yield environment

    def agent_path(self) -> Path:
        """A folder holding only this package (a link to it), for the PYTHONPATH of a kernel in a
        declared environment: `from reprolab_agent import record` works there, and nothing else of
        the agent's own environment shows."""
        folder = self.root / ".agent"
        link = folder / "reprolab_agent"
        package = Path(__file__).resolve().parent
        if not link.is_symlink() or link.resolve() != package:
            folder.mkdir(exist_ok=True)
            staged = folder / f".link-{os.getpid()}-{threading.get_ident()}"
            staged.unlink(missing_ok=True)
            staged.symlink_to(package, target_is_directory=True)
            os.replace(staged, link)  # atomic: concurrent slots never see it missing
        return folder

    @contextlib.contextmanager
    def hold(self, sha256: str) -> Iterator[Path | None]:
        """Keep an already built environment from eviction without building anything (a warm
        slot made ahead for it); yields None when it is not built."""
        with open(self._lock_file(sha256, "use"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield self.path(sha256) if self.is_ready(sha256) else None

    # -- building ------------------------------------------------------------------------------
    def _build(self, spec: EnvironmentSpec, say: Callable[[str], None], stop: Callable[[], str]) -> None:
        if self.uv is None:
            raise BuildFailed("this node cannot build environments: uv is not installed beside the agent")
        target = self.path(spec.sha256)
        if target.exists():  # a build that did not finish
            shutil.rmtree(target)
        started = time.monotonic()
        packages = sum(1 for line in spec.lock.splitlines() if "==" in line and not line.lstrip().startswith("#"))
        layer = " over the node's base packages" if spec.layered else ""
        say(f"building environment {spec.short}: {packages} packages{layer}")
        try:
            venv = [self.uv, "venv", str(target), "--python", sys.executable, "--no-config"]
            self._uv([*venv, *(["--system-site-packages"] if spec.layered else [])], say, stop)
            lock_file = target / "reprolab-lock.txt"
            lock_file.write_text(spec.lock)
            install = [self.uv, "pip", "install", "--python", str(target / "bin" / "python"), "-r", str(lock_file)]
            install += ["--require-hashes", "--no-deps", "--no-build", "--no-config"]
            install += ["--index-url", self.index_url] if self.index_url else []
            self._uv(install, say, stop)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        mark = {"sha256": spec.sha256, "packages": packages, "seconds": round(seconds, 3), "built_at": time.time()}
        target.chmod(0o755)  # the runs' to read (uv venv makes it so too), never to change
        (target / READY_MARK).write_text(json.dumps(mark))
        say(f"environment {spec.short}: built in {seconds:.1f} s")

    def _uv(self, command: list[str], say: Callable[[str], None], stop: Callable[[], str] = lambda: "") -> None:
        env = {**os.environ, "UV_CACHE_DIR": str(self.root / UV_CACHE), "NO_COLOR": "1", "UV_NO_PROGRESS": "1"}
        env.setdefault("UV_SYSTEM_CERTS", "1")  # the machine's CA store too (TLS-inspecting proxies)
        env.pop("VIRTUAL_ENV", None)  # the agent's own venv must not be the target
        tail: deque[str] = deque(maxlen=MESSAGE_LINES)
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=self.root
        )
        assert process.stderr is not None
        stopped: list[str] = []
        ended = threading.Event()

        def watch() -> None:
            while not ended.wait(STOP_POLL_SECONDS):
                reason = stop()
                if reason:
                    stopped.append(reason)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    return

        watcher = threading.Thread(target=watch, name="build-stop", daemon=True)
        watcher.start()
        with process:
            for raw in process.stderr:
                line = raw.rstrip()
                if not line:
                    continue
                tail.append(line)
                if not line.startswith((" + ", " - ", "Activate with")):  # summaries, not one line per package
                    say(line.strip())
        ended.set()
        watcher.join()
        if stopped:
            raise BuildStopped(f"the build was stopped: {stopped[0]}")
        if process.returncode != 0:
            message = "\n".join(tail)
            if any(word in message for word in UNREACHABLE):
                index = self.index_url or "the default index (PyPI)"
                message += (
                    f"\nThis node could not reach the package index {index}: give the agent a mirror it can reach "
                    "with --index-url."
                )
            raise BuildFailed(message or f"uv exited with {process.returncode}")

    # -- bounding ------------------------------------------------------------------------------
    def evict(self, keep: str = "") -> list[str]:
        """Keep the whole (environments and uv's cache, each file counted once: uv hardlinks its
        cache into the environments) within max_bytes: remove the least recently used
        environments no run holds, and half-built ones nobody is building; if uv's cache alone
        still keeps it over, clear the cache (the environments keep their files). Returns the
        sha256 of the environments removed."""
        if not self.max_bytes:
            return []
        removed: list[str] = []
        with self._evicting:
            candidates = []
            for folder in self.root.iterdir():
                if folder.name.startswith(".") or folder.name == keep or not folder.is_dir():
                    continue
                mark = folder / READY_MARK
                candidates.append((mark.stat().st_mtime if mark.is_file() else 0.0, folder))
            total = disk_usage(self.root)  # walked once; each removal subtracts what it freed
            for _, folder in sorted(candidates):  # half-built first (0), then least recently used
                if total <= self.max_bytes:
                    break
                freed = self._remove_unused(folder)
                if freed is not None:
                    removed.append(folder.name)
                    total -= freed
            if total > self.max_bytes and self.uv is not None:
                with contextlib.suppress(OSError, BuildFailed):
                    self._uv([self.uv, "cache", "clean"], lambda message: None)
        if removed:
            log.info("environment cache: evicted %s", ", ".join(sha[:12] for sha in removed))
        return removed

    def _remove_unused(self, folder: Path) -> int | None:
        """Remove an environment no run holds and no build is writing; returns the bytes that
        freed, or None when it is in use."""
        with (
            open(self._lock_file(folder.name, "use"), "a+b") as use,
            open(self._lock_file(folder.name, "build"), "a+b") as build,
        ):
            if not (_try_lock(use, fcntl.LOCK_EX) and _try_lock(build, fcntl.LOCK_EX)):
                return None
            freed = freed_by_removing(folder)
            (folder / READY_MARK).unlink(missing_ok=True)  # not ready from here on, whatever remains
            shutil.rmtree(folder, ignore_errors=True)
        return freed


def disk_usage(root: Path) -> int:
    """Bytes of disk under `root`, each file once however many hard links it has."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for info in tree_entries(root):
        if info is None or (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        total += info.st_blocks * 512
    return total


def freed_by_removing(folder: Path) -> int:
    """Bytes of disk that removing `folder` frees: its folders, and the files all of whose hard
    links are in it (a file uv also links from its cache stays on disk)."""
    inodes: dict[tuple[int, int], list[int]] = {}  # inode -> [links seen here, links in all, bytes]
    for info in tree_entries(folder):
        if info is None:
            continue
        links = 1 if stat.S_ISDIR(info.st_mode) else info.st_nlink  # a folder's count is its subfolders'
        seen = inodes.setdefault((info.st_dev, info.st_ino), [0, links, info.st_blocks * 512])
        seen[0] += 1
    own = folder.lstat().st_blocks * 512
    return own + sum(size for here, links, size in inodes.values() if here >= links)


def _wait_for_lock(lock: Any, stop: Callable[[], str]) -> None:
    """An exclusive lock, waited for while `stop` says nothing (then BuildStopped)."""
    while not _try_lock(lock, fcntl.LOCK_EX):
        reason = stop()
        if reason:
            raise BuildStopped(f"stopped while waiting for another run's build: {reason}")
        time.sleep(STOP_POLL_SECONDS)


def _try_lock(lock: Any, kind: int) -> bool:
    try:
        fcntl.flock(lock, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# -- what the snapshot records -----------------------------------------------------------------
def distributions_in(folders: list[Path]) -> dict[str, str]:
    """Installed distributions in these site-packages folders, canonical name -> version."""
    import importlib.metadata

    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=[str(f) for f in folders]):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return dict(sorted(found.items()))


def locked_packages(lock: str) -> dict[str, str]:
    """The pins of a lock (name==version lines), canonical name -> version."""
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in lock.splitlines():
        text = line.split(";")[0].split("\\")[0].strip()
        if "==" in text and not text.startswith(("#", "-")):
            name, version = text.split("==", 1)
            pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def describe_environment(environment: Environment | None) -> dict[str, Any]:
    """The snapshot's `environment` part: which lock, and whether what is installed is exactly
    the lock (names the differences); for a layered environment, the base layer's packages too."""
    if environment is None:
        return {"declared": False}
    installed = distributions_in([environment.site_packages()])
    pinned = locked_packages(environment.spec.lock)
    differences = [
        f"{name}: locked {version}, installed {installed.get(name, 'nothing')}"
        for name, version in pinned.items()
        if installed.get(name) != version
    ]
    differences += [
        f"{name}: installed {version}, not in the lock" for name, version in installed.items() if name not in pinned
    ]
    described: dict[str, Any] = {
        "declared": True,
        "sha256": environment.sha256,
        "layered": environment.spec.layered,
        "matches_lock": not differences,
        "differences": differences[:50],
        "packages": installed,
    }
    if environment.spec.layered:
        base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
        described["base_packages"] = distributions_in([Path(base["purelib"]), Path(base["platlib"])])
    return described
