"""A real local package index for the declared-environment tests and benches.

Declared environments are resolved with `uv pip compile --generate-hashes` and built with
`uv pip install --require-hashes`. Tests of that must not depend on PyPI (its answers change, it
may be unreachable, and a test must not be able to pick up something we did not put there) and
must not mock the index (the hashes, the simple API and uv's behaviour with them are what we
test). So the tests serve a folder of real wheels with pypiserver, on 127.0.0.1, without
fallback to PyPI:

- `KERNEL_PACKAGES`: ipykernel and its whole dependency tree for CPython 3.11 on x86_64 Linux, at
  the versions the site itself runs (read from requirements.txt), so an environment built from
  the index can run the agent's kernels.
- `SMALL_PACKAGES`: small pure-Python packages that are *not* in the project's virtualenv, so a
  test can tell an import served by a declared environment from one leaking in from ours.
- `BROKEN_SDIST`: a source distribution whose metadata uv reads without building it (so it
  resolves into a lock) but whose build always fails, with `BROKEN_BUILD_MESSAGE`: the case of a
  lock that resolves yet cannot be installed.

`ensure_wheelhouse()` downloads the wheels once into `WHEELHOUSE` (var/ is git-ignored);
`package_index()` serves a folder and yields its simple-index URL.
"""

import contextlib
import fcntl
import gzip
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / "var" / "package-index"
REQUIREMENTS = ROOT / "requirements.txt"

# The target the tests resolve for: `uv pip compile --python-version 3.11 --python-platform linux`
# (x86_64, glibc). The wheels are downloaded for that target whatever interpreter downloads them.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "linux"

# ipykernel's dependency tree for CPython 3.11 on x86_64 Linux (markers evaluated for it: pexpect
# and ptyprocess are Linux-only, appnope and colorama are not needed). Found with
# `uv pip compile --python-version 3.11 --python-platform linux` of ipykernel==7.4.0 constrained
# by requirements.txt; the versions are requirements.txt's (see `_pinned`).
KERNEL_TREE = (
    "asttokens",
    "comm",
    "debugpy",
    "executing",
    "ipykernel",
    "ipython",
    "ipython-pygments-lexers",
    "jedi",
    "jupyter-client",
    "jupyter-core",
    "matplotlib-inline",
    "nest-asyncio2",
    "packaging",
    "parso",
    "pexpect",
    "platformdirs",
    "prompt-toolkit",
    "psutil",
    "ptyprocess",
    "pure-eval",
    "pygments",
    "python-dateutil",
    "pyzmq",
    "six",
    "stack-data",
    "tornado",
    "traitlets",
    "typing-extensions",
    "wcwidth",
)

# Small pure-Python wheels that the project's virtualenv does not have (text-unidecode is
# python-slugify's only dependency; the others have none).
SMALL_PACKAGES = (
    "cachetools==8.0.3",
    "humanize==4.17.0",
    "more-itertools==11.2.1",
    "natsort==8.4.0",
    "python-slugify==9.2.0",
    "tabulate==0.10.0",
    "termcolor==3.3.0",
    "text-unidecode==1.3",
    "tomli==2.5.0",
    "toolz==1.2.0",
    "xmltodict==1.0.4",
)

BROKEN_NAME = "reprolab-broken-build"
BROKEN_VERSION = "0.1"
BROKEN_REQUIREMENT = f"{BROKEN_NAME}=={BROKEN_VERSION}"
BROKEN_SDIST = f"{BROKEN_NAME}-{BROKEN_VERSION}.tar.gz"
BROKEN_BUILD_MESSAGE = "reprolab-broken-build refuses to build: this is the test's broken requirement"

STAMP = ".complete"  # written last; holds what the folder was made of
START_SECONDS = 30.0  # pypiserver answers in about a second
STOP_SECONDS = 10.0  # a server that outlasts SIGTERM this long is killed


def _pinned(names: tuple[str, ...], requirements: Path = REQUIREMENTS) -> tuple[str, ...]:
    """`name==version` for each name, at the version requirements.txt (a pip freeze) pins: the
    kernel served by the index is the one the site and agent run."""
    pins = {}
    for line in requirements.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    missing = [name for name in names if canonicalize_name(name) not in pins]
    if missing:
        raise LookupError(f"{requirements} pins none of {missing}")
    return tuple(f"{name}=={pins[canonicalize_name(name)]}" for name in names)


KERNEL_PACKAGES = _pinned(KERNEL_TREE)


def _contents() -> str:
    """What a complete wheelhouse holds; a stamp with other contents means it must be remade."""
    return "\n".join([*sorted(KERNEL_PACKAGES), *sorted(SMALL_PACKAGES), BROKEN_SDIST, BROKEN_BUILD_MESSAGE]) + "\n"


def ensure_wheelhouse() -> Path:
    """`WHEELHOUSE`, complete: downloaded and built the first time (a minute or so), then reused.

    The stamp file is written last, so an interrupted download is redone; a changed package list
    remakes the folder from scratch (a stale version left beside the new one would be resolved).
    A file lock lets a bench and a test session share the folder.
    """
    WHEELHOUSE.parent.mkdir(parents=True, exist_ok=True)
    with open(WHEELHOUSE.parent / "package-index.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = WHEELHOUSE / STAMP
        if stamp.is_file() and stamp.read_text() == _contents():
            return WHEELHOUSE
        staging = Path(tempfile.mkdtemp(prefix="package-index.", dir=WHEELHOUSE.parent))
        try:
            _download(staging)
            _write_broken_sdist(staging)
            (staging / STAMP).write_text(_contents())
            shutil.rmtree(WHEELHOUSE, ignore_errors=True)
            staging.rename(WHEELHOUSE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return WHEELHOUSE


def _download(folder: Path) -> None:
    """The wheels of every pinned package for the target, not for the interpreter running this.

    Without dependencies: the lists name the whole tree, and pip resolving for another target
    would evaluate the markers for this interpreter. pip expands the manylinux tag down to older
    glibc versions; uv's `linux` target is manylinux_2_28.
    """
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"),
            *("--only-binary=:all:", "--no-deps", "--implementation", "cp"),
            *("--python-version", PYTHON_VERSION, "--platform", "manylinux_2_28_x86_64"),
            *("--dest", str(folder)),
            *KERNEL_PACKAGES,
            *SMALL_PACKAGES,
        ],
        capture_output=True,  # pip's warnings about this machine's configured mirrors are noise
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"pip download failed ({result.returncode}):\n{result.stdout}{result.stderr}"[-6000:])


_BROKEN_BACKEND = f'''"""An in-tree PEP 517 backend that never builds: {BROKEN_NAME} exists to fail."""


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError({BROKEN_BUILD_MESSAGE!r})


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError({BROKEN_BUILD_MESSAGE!r})
'''

_BROKEN_PYPROJECT = """[build-system]
requires = []
build-backend = "refuse_to_build"
backend-path = ["."]
"""

# Metadata 2.2 without Dynamic fields: uv takes it as the distribution's metadata without
# running the backend (and the backend has no prepare_metadata hook to fall back on).
_BROKEN_PKG_INFO = f"""Metadata-Version: 2.2
Name: {BROKEN_NAME}
Version: {BROKEN_VERSION}
Summary: A source distribution whose build always fails (ReproLab's tests).
Requires-Python: >=3.8
"""


def _write_broken_sdist(folder: Path) -> Path:
    """`BROKEN_SDIST` in `folder`, byte for byte the same each time (fixed times and owners), so a
    lock that pinned its hash stays valid when the wheelhouse is remade."""
    top = f"{BROKEN_NAME}-{BROKEN_VERSION}"
    members = {"PKG-INFO": _BROKEN_PKG_INFO, "pyproject.toml": _BROKEN_PYPROJECT, "refuse_to_build.py": _BROKEN_BACKEND}
    path = folder / BROKEN_SDIST
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's session, then SIGKILL after `STOP_SECONDS`; always reaped."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def package_index(folder: Path | None = None) -> Iterator[str]:
    """Serve `folder` (default: `ensure_wheelhouse()`) as a package index on 127.0.0.1; yields
    its simple-API URL, `http://127.0.0.1:PORT/simple/`. The server is stopped on the way out.

    pypiserver without authentication (`-a . -P .`), without its redirect to PyPI for unknown
    names (a test must see a missing package as missing), with `#sha256=` fragments on every
    link (what `uv pip compile --generate-hashes` writes into the lock).
    """
    folder = ensure_wheelhouse() if folder is None else folder
    port = _free_port()
    url = f"http://127.0.0.1:{port}/simple/"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "pypiserver", "run", "-p", str(port), "-i", "127.0.0.1"),
                *("--disable-fallback", "--hash-algo", "sha256", "-a", ".", "-P", ".", str(folder)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-4000:]
                    state = f"exited with {process.returncode}" if process.poll() is not None else "did not answer"
                    raise RuntimeError(f"pypiserver on port {port} {state}:\n{output}")
                time.sleep(0.05)
            yield url
        finally:
            _stop(process)
