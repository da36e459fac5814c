"""Building a declared environment on a node against pip, on this machine, in one run.

A local pypiserver (tests/package_index.py: real wheels, nothing from PyPI) serves about ten small
packages and ipykernel's tree. The site's lock is resolved once with
`uv pip compile --generate-hashes`; then, `REPEATS` times each (medians):
- baseline "pip": `python -m venv DIR && DIR/bin/pip install --no-cache-dir --index-url URL -r
  requirements.txt` of the same packages pinned to the same versions, plus ipykernel (what a
  user would do by hand);
- "cold build": the agent's EnvironmentCache with an empty uv cache and an empty environment
  root, building the lock (`uv venv` + `uv pip install --require-hashes`);
- "warm reuse": `use()` again on the same lock once the environment exists.
Every environment is checked to import what it declares (outside the timings).

Run: `.venv/bin/python bench/environment_bench.py [repeats]` (about a minute; the first run also
downloads the wheelhouse into var/package-index).

Every process it starts has an owner that stops it on the way out, however the bench ends:
finished, failed, interrupted (Ctrl-C), terminated (SIGTERM) or past its time limit. The index
server gets SIGTERM, then SIGKILL (tests.package_index); a pip or uv child still running is
killed with its process group as the exception passes (`run`).
"""

import faulthandler
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent")]

from reprolab_agent.envs import EnvironmentCache, EnvironmentSpec  # noqa: E402
from uv import find_uv_bin  # noqa: E402

from tests.package_index import (  # noqa: E402
    KERNEL_PACKAGES,
    PYTHON_PLATFORM,
    PYTHON_VERSION,
    SMALL_PACKAGES,
    ensure_wheelhouse,
    package_index,
)

TMP = Path(tempfile.mkdtemp(prefix="reprolab-env-bench-"))
TIME_LIMIT = 600  # seconds; then the tracebacks are dumped and the bench stops (cleaning up)
STEP_LIMIT = 300  # one venv, install or compile
IPYKERNEL = next(pin for pin in KERNEL_PACKAGES if pin.startswith("ipykernel=="))
REQUIREMENTS = "".join(f"{pin}\n" for pin in (*SMALL_PACKAGES, IPYKERNEL))
IMPORTS = "import cachetools, humanize, more_itertools, natsort, slugify, tabulate, termcolor, tomli, toolz"
IMPORTS += ", xmltodict, ipykernel"
# pip and uv see only the local index: no pip.conf, PIP_* or uv.toml of this machine (mirrors,
# find-links, extra indexes) may serve a package or slow one down.
PIP_ENV = {
    **{key: value for key, value in os.environ.items() if not key.startswith("PIP_")},
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


class Stopped(Exception):
    """SIGTERM (or the time limit) ended the bench."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Stopped(signal.Signals(signum).name)


def phase(name: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run to completion and return its output; a failure raises with its error output.

    In a session of its own, killed as a whole if the bench stops first: `python -m venv` runs
    ensurepip in a grandchild, which killing the child alone would leave running.
    """
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=STEP_LIMIT)
    finally:
        if process.poll() is None:  # stopped, failed or past its limit: the leader is alive, the group ours
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {process.returncode}:\n{stderr[-4000:]}")
    return stdout


def check_imports(python: Path) -> None:
    run([str(python), "-c", IMPORTS])


@dataclass
class Figures:
    packages: int = 0
    pip_version: str = ""
    resolve: list[float] = field(default_factory=list)
    pip_venv: list[float] = field(default_factory=list)
    pip_install: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    pip_cached: list[float] = field(default_factory=list)  # venv + install, pip's cache already filled
    cold_shared: list[float] = field(default_factory=list)  # a new environment, uv's cache already filled


def resolve(index_url: str, figures: Figures) -> str:
    """The site's step: the lock, resolved with an empty uv cache (timed for scale, not compared)."""
    source = TMP / "requirements.in"
    source.write_text(REQUIREMENTS)
    cache = TMP / "resolve-cache"
    start = time.perf_counter()
    lock = run(
        [
            *(find_uv_bin(), "pip", "compile", "--quiet", "--generate-hashes", "--no-header"),
            *("--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM),
            *("--index-url", index_url, "--cache-dir", str(cache), str(source)),
        ],
        env={**os.environ, "UV_NO_CONFIG": "1"},
    )
    figures.resolve.append(time.perf_counter() - start)
    shutil.rmtree(cache)
    return lock


def with_pip(index_url: str, repeat: int, figures: Figures, *, cache: Path | None = None) -> None:
    """The baseline: a stdlib venv, then pip resolving and installing the same pins, with no
    cache, or with `cache` (pip's own, filled by an earlier install: the fair match for a new
    environment on a node whose uv cache holds the packages)."""
    (TMP / "requirements.txt").write_text(REQUIREMENTS)
    target = TMP / f"pip-{repeat}"
    start = time.perf_counter()
    run([sys.executable, "-m", "venv", str(target)], env=PIP_ENV)
    made = time.perf_counter()
    caching = ["--cache-dir", str(cache)] if cache is not None else ["--no-cache-dir"]
    run(
        [
            *(str(target / "bin" / "pip"), "install", "--quiet", *caching),
            *("--index-url", index_url, "-r", str(TMP / "requirements.txt")),
        ],
        env=PIP_ENV,
    )
    if cache is not None:
        figures.pip_cached.append(time.perf_counter() - start)
        check_imports(target / "bin" / "python")
        shutil.rmtree(target)
        return
    figures.pip_venv.append(made - start)
    figures.pip_install.append(time.perf_counter() - made)
    check_imports(target / "bin" / "python")
    figures.pip_version = run([str(target / "bin" / "pip"), "--version"], env=PIP_ENV).split(" from ")[0]
    shutil.rmtree(target)


def quiet(message: str) -> None:
    """The cache's progress messages (a node would send them to the site's run log)."""


def cold_build(index_url: str, spec: EnvironmentSpec, repeat: int, figures: Figures) -> Path:
    """The agent's cache from nothing: no environment, no uv cache. Returns its root."""
    root = TMP / f"cold-{repeat}"
    cache = EnvironmentCache(root, index_url=index_url)
    start = time.perf_counter()
    with cache.use(spec, say=quiet) as env:
        figures.cold.append(time.perf_counter() - start)
        if not env.built:
            raise RuntimeError(f"an empty cache at {root} reused an environment")
        check_imports(env.python)
    return root


def new_environment_shared_cache(index_url: str, spec: EnvironmentSpec, root: Path, figures: Figures) -> None:
    """A node that has not built this environment but whose uv cache holds its packages (from
    other environments: most share ipykernel's tree, numpy, ...): the usual cold build."""
    cache = EnvironmentCache(root, index_url=index_url)
    shutil.rmtree(cache.path(spec.sha256))
    start = time.perf_counter()
    with cache.use(spec, say=quiet) as env:
        figures.cold_shared.append(time.perf_counter() - start)
        if not env.built:
            raise RuntimeError("a removed environment was reused")
        check_imports(env.python)


def warm_reuse(index_url: str, spec: EnvironmentSpec, root: Path, repeats: int, figures: Figures) -> None:
    cache = EnvironmentCache(root, index_url=index_url)
    for _ in range(repeats):
        start = time.perf_counter()
        with cache.use(spec, say=quiet) as env:
            figures.warm.append(time.perf_counter() - start)
            if env.built:
                raise RuntimeError("a built environment was built again")


def measure(repeats: int) -> Figures:
    figures = Figures()
    phase("the wheelhouse (downloaded once into var/package-index)")
    folder = ensure_wheelhouse()
    with package_index(folder) as index_url:
        phase(f"index at {index_url}; resolving the lock")
        for _ in range(repeats):
            lock = resolve(index_url, figures)
        figures.packages = sum(1 for line in lock.splitlines() if "==" in line and not line.startswith((" ", "#")))
        spec = EnvironmentSpec(sha256=hashlib.sha256(lock.encode()).hexdigest(), lock=lock)
        root = None
        for repeat in range(repeats):  # interleaved, so a slow spell of the machine hits both
            phase(f"pip baseline {repeat + 1}/{repeats}")
            with_pip(index_url, repeat, figures)
            phase(f"cold build {repeat + 1}/{repeats}")
            if root is not None:
                shutil.rmtree(root)
            root = cold_build(index_url, spec, repeat, figures)
        assert root is not None
        pip_cache = TMP / "pip-cache"
        with_pip(index_url, repeats, Figures(), cache=pip_cache)  # fills pip's cache, not measured
        for repeat in range(repeats):
            phase(f"pip with its cache filled, new environment with uv's cache filled {repeat + 1}/{repeats}")
            with_pip(index_url, repeat, figures, cache=pip_cache)
            new_environment_shared_cache(index_url, spec, root, figures)
        phase("warm reuse")
        warm_reuse(index_url, spec, root, repeats, figures)
    return figures


def report(repeats: int, figures: Figures) -> None:
    med = statistics.median
    pip_total = med([venv + install for venv, install in zip(figures.pip_venv, figures.pip_install, strict=True)])
    cold, warm = med(figures.cold), med(figures.warm)
    print(
        f"bench/environment_bench.py ({os.cpu_count()} CPUs; {len(SMALL_PACKAGES)} small packages + ipykernel,"
        f" {figures.packages} in the lock; local pypiserver; {repeats} repeats, medians)"
    )
    print(f"  site      resolve: uv pip compile --generate-hashes, empty cache : {med(figures.resolve):7.3f} s")
    print(
        f"  baseline  pip: python -m venv + pip install --no-cache-dir         : {pip_total:7.3f} s"
        f"  (venv {med(figures.pip_venv):.2f} s + install {med(figures.pip_install):.2f} s; {figures.pip_version})"
    )
    print(
        f"  ours      cold build: empty uv cache, empty environment root      : {cold:7.3f} s"
        f"  ({pip_total / cold:.1f}x faster than pip; {med(figures.pip_install) / cold:.1f}x its install alone)"
    )
    pip_cached, shared = med(figures.pip_cached), med(figures.cold_shared)
    print(f"  baseline  pip, its cache filled: python -m venv + pip install      : {pip_cached:7.3f} s")
    print(
        f"  ours      new environment, uv's cache filled by earlier builds    : {shared:7.3f} s"
        f"  ({pip_cached / shared:.1f}x faster than pip with its cache)"
    )
    print(f"  ours      warm reuse: use() on the built environment             : {warm * 1000:7.3f} ms")


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A hung phase shows where (the tracebacks), then the bench stops through SIGTERM, so the
    # `finally` below still stops every process (faulthandler's own exit would skip it).
    faulthandler.dump_traceback_later(TIME_LIMIT)
    limit = threading.Timer(TIME_LIMIT + 1, os.kill, (os.getpid(), signal.SIGTERM))
    limit.daemon = True
    limit.start()
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    try:
        figures = measure(repeats)
    finally:
        limit.cancel()
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(TMP, ignore_errors=True)
    report(repeats, figures)


if __name__ == "__main__":
    try:
        main()
    except (Stopped, KeyboardInterrupt) as why:
        sys.exit(f"stopped ({str(why) or 'interrupted'}); every process it started is stopped")
