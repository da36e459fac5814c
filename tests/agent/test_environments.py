"""Declared environments on the agent: built once per lock with real uv from a real local index
(tests/package_index.py), shared by concurrent users, bounded, and run on the environment's own
kernel inside the sandbox, with a spare slot kept warm for an environment in use."""

import fcntl
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from reprolab_agent.envs import (
    BuildFailed,
    BuildStopped,
    EnvironmentCache,
    EnvironmentSpec,
    describe_environment,
    disk_usage,
    freed_by_removing,
    missing_module_hint,
)

from apps.environments.declarations import read_declaration
from apps.environments.resolver import resolve
from tests.environments.conftest import package_index_url  # noqa: F401 - the session's index
from tests.integration.servers import wait_until

from .slots import notebook, run_cells, sandbox_at, warm_pool


@pytest.fixture
def locks(settings, package_index_url, tmp_path):  # noqa: F811
    settings.REPROLAB_PACKAGE_INDEX_URL = package_index_url
    settings.REPROLAB_UV_CACHE_DIR = tmp_path / "site-uv"

    def lock(text: str) -> EnvironmentSpec:
        resolved = resolve(read_declaration("requirements.txt", text.encode()))
        return EnvironmentSpec(resolved.sha256, resolved.lock, python_version=resolved.python_version)

    return lock


def test_concurrent_users_of_one_lock_share_one_build(locks, package_index_url, tmp_path):  # noqa: F811
    spec = locks("tabulate\n")
    cache = EnvironmentCache(tmp_path / "environments", index_url=package_index_url)
    said: list[str] = []
    built: list[bool] = []
    all_in = threading.Barrier(3)

    def use() -> None:
        with cache.use(spec, said.append) as environment:
            built.append(environment.built)
            assert environment.python.exists()
            all_in.wait(timeout=120)  # both hold it at once: in use, shared

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    all_in.wait(timeout=120)
    for thread in threads:
        thread.join()
    assert sorted(built) == [False, True]
    assert sum(m.startswith("building environment") for m in said) == 1
    assert cache.is_ready(spec.sha256)


def test_a_lock_that_is_not_its_sha256_is_refused():
    with pytest.raises(BuildFailed, match="does not match its sha256"):
        EnvironmentSpec.from_claim({"sha256": "0" * 64, "lock": "tabulate==0.10.0\n"})
    assert EnvironmentSpec.from_claim(None) is None


def test_a_lock_for_another_python_is_refused_before_building(tmp_path):
    spec = EnvironmentSpec("a" * 64, "", python_version="3.99")
    with pytest.raises(BuildFailed, match=r"resolved for Python 3\.99"), EnvironmentCache(tmp_path).use(spec):
        pass


def test_the_least_recently_used_environment_not_in_use_is_evicted(locks, package_index_url, tmp_path):  # noqa: F811
    cache = EnvironmentCache(tmp_path / "environments", index_url=package_index_url, max_bytes=1)  # always over
    first, second, third = locks("toolz\n"), locks("humanize\n"), locks("termcolor\n")
    with cache.use(first):
        pass
    with cache.use(second):  # building it evicts `first`, which nothing holds
        assert not cache.is_ready(first.sha256)
        with cache.use(third):  # `second` is in use: kept
            assert cache.is_ready(second.sha256)
    assert cache.is_ready(third.sha256)


def test_the_missing_module_hint_names_the_package_to_declare():
    hint = missing_module_hint("ModuleNotFoundError: No module named 'sklearn.linear_model'", declared=False)
    assert "(scikit-learn)" in hint
    assert "base environment" in hint
    assert "lacks it" in missing_module_hint("ModuleNotFoundError: No module named 'foo'", declared=True)
    assert missing_module_hint("ValueError: x", declared=False) == ""


def test_a_run_uses_the_environments_own_kernel_in_the_sandbox_and_a_spare_is_kept(
    locks,
    package_index_url,  # noqa: F811
    site: Path,
):
    cache = EnvironmentCache(site / "environments", index_url=package_index_url)
    spec = locks("tabulate\n")
    source = (
        "import sys, tabulate\n"
        "print(sys.prefix)\n"
        "try:\n    import django\n    print('django visible')\nexcept ImportError:\n    print('django hidden')\n"
        "from reprolab_agent import record\nrecord('rows', tabulate.tabulate([[1]]))"
    )
    with (
        warm_pool(sandbox_at("bwrap", site), site, environments=cache, environment_spares=1) as pool,
        cache.use(spec) as environment,
    ):
        outcome = run_cells(pool, notebook(source), environment=environment)
        assert outcome.code == 0, outcome.events
        assert str(environment.path) in outcome.stdout
        assert "django hidden" in outcome.stdout  # the agent's own packages do not show
        wait_until(
            lambda: any(s.environment == spec.sha256 for s in pool._ready),
            timeout=90,
            what="a spare slot for the environment just used",
        )
        spare = next(s for s in pool._ready if s.environment == spec.sha256)
        assert spare.environment_hold is not None  # it keeps the environment from eviction
        again = run_cells(pool, notebook("import tabulate"), environment=environment)
        assert again.code == 0, again.events
        assert again.slot is spare  # the next run in it started on the kernel already up


def test_a_build_stops_at_once_when_its_run_is_cancelled(locks, tmp_path):
    """An index that accepts connections and never answers: the build would hang for uv's whole
    timeout; cancelling the run ends it now, leaving no installer and no half-built folder."""
    spec = locks("tabulate\n")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: requests wait in the backlog
    index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple/"
    cache = EnvironmentCache(tmp_path / "environments", index_url=index)
    building = threading.Event()
    cancelled = threading.Event()

    def say(message: str) -> None:
        if message.startswith("Using Python"):  # uv pip install has started
            building.set()

    def cancel_when_building() -> None:
        building.wait(timeout=60)
        cancelled.set()

    threading.Thread(target=cancel_when_building, daemon=True).start()
    started = time.monotonic()
    with (
        silent,
        pytest.raises(BuildStopped, match="cancelled"),
        cache.use(spec, say, stop=lambda: "cancelled" if cancelled.is_set() else ""),
    ):
        pass
    assert time.monotonic() - started < 20  # not uv's 30 s request timeout
    assert not cache.path(spec.sha256).exists()
    left = subprocess.run(["pgrep", "-f", str(cache.path(spec.sha256))], capture_output=True, check=False)
    assert left.stdout == b""


def test_a_layered_environment_sees_the_base_packages_a_closed_one_does_not(
    settings,
    package_index_url,  # noqa: F811
    tmp_path,
):
    settings.REPROLAB_PACKAGE_INDEX_URL = package_index_url
    settings.REPROLAB_UV_CACHE_DIR = tmp_path / "site-uv"
    cache = EnvironmentCache(tmp_path / "environments", index_url=package_index_url)
    probe = "import importlib.util, sys; print(importlib.util.find_spec('pip') is not None)"
    seen = {}
    for layered in (False, True):
        resolved = resolve(read_declaration("requirements.txt", b"tabulate\n"), layered=layered)
        spec = EnvironmentSpec(resolved.sha256, resolved.lock, layered=layered, python_version="3.11")
        with cache.use(spec) as environment:
            done = subprocess.run([str(environment.python), "-c", probe], capture_output=True, text=True, check=True)
            seen[layered] = done.stdout.strip()
            described = describe_environment(environment)
            assert described["matches_lock"] is True
            assert ("base_packages" in described) is layered
    assert seen == {False: "False", True: "True"}  # pip lives in the base interpreter only


def test_a_run_waiting_for_another_build_can_be_stopped(locks, package_index_url, tmp_path):  # noqa: F811
    spec = locks("cachetools\n")
    cache = EnvironmentCache(tmp_path / "environments", index_url=package_index_url)
    cancelled = threading.Event()
    with open(cache._lock_file(spec.sha256, "build"), "a+b") as someone_building:
        fcntl.flock(someone_building, fcntl.LOCK_EX)
        said: list[str] = []

        def say(message: str) -> None:
            said.append(message)
            if "waiting for another run's build" in message:
                cancelled.set()

        with (
            pytest.raises(BuildStopped, match="while waiting"),
            cache.use(spec, say, stop=lambda: "cancelled" if cancelled.is_set() else ""),
        ):
            pass
    assert not cache.is_ready(spec.sha256)


def test_the_environments_folder_is_passable_but_its_locks_and_cache_are_the_agents(tmp_path):
    cache = EnvironmentCache(tmp_path / "environments")
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o711
    assert stat.S_IMODE((cache.root / ".locks").stat().st_mode) == 0o700
    assert stat.S_IMODE((cache.root / ".uv-cache").stat().st_mode) == 0o700


def test_what_eviction_counts_as_freed_is_what_removing_frees(tmp_path):
    """Hard links into uv's cache free nothing; links that all lie in the folder free their file once."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "env" / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "cache" / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "cache" / "a", tmp_path / "env" / "sub" / "a")
    (tmp_path / "env" / "b").write_bytes(b"y" * 100_000)
    os.link(tmp_path / "env" / "b", tmp_path / "env" / "sub" / "b2")
    before, freed = disk_usage(tmp_path), freed_by_removing(tmp_path / "env")
    shutil.rmtree(tmp_path / "env")
    assert before - freed == disk_usage(tmp_path)
    assert freed >= 100_000  # b, once
