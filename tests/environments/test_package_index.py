"""The local package index that the declared-environment tests resolve and install from.

These check the fixture itself against what the tests need of it: every link carries a sha256
(uv writes it into the lock), nothing is fetched from PyPI, and the broken sdist resolves from its
static metadata yet fails to build.
"""

import hashlib
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.package_index import (
    BROKEN_BUILD_MESSAGE,
    BROKEN_REQUIREMENT,
    PYTHON_PLATFORM,
    PYTHON_VERSION,
    SMALL_PACKAGES,
    WHEELHOUSE,
)

TABULATE = next(pin for pin in SMALL_PACKAGES if pin.startswith("tabulate=="))


def uv(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """uv with its own cache and no configuration from this machine (no uv.toml, no UV_* index)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("UV_")}
    env.update(UV_CACHE_DIR=str(cache), UV_NO_CONFIG="1")
    return subprocess.run([find_uv_bin(), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def compile_lock(requirements: str, index_url: str, folder: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    source = folder / "requirements.in"
    source.write_text(requirements)
    return uv(
        *("pip", "compile", "--generate-hashes", "--python-version", PYTHON_VERSION),
        *("--python-platform", PYTHON_PLATFORM, "--index-url", index_url, "--no-header", str(source)),
        cache=cache,
    )


def test_index_serves_sha256_links_and_uv_locks_them(package_index_url, uv_cache_dir, tmp_path):
    page = urllib.request.urlopen(package_index_url + "tabulate/", timeout=10).read().decode()
    wheel = next(WHEELHOUSE.glob("tabulate-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f"{wheel.name}#sha256={digest}" in page

    with pytest.raises(urllib.error.HTTPError) as missing:  # no redirect to PyPI for what it lacks
        urllib.request.urlopen(package_index_url + "requests-oauthlib/", timeout=10)
    assert missing.value.code == 404

    result = compile_lock("tabulate\n", package_index_url, tmp_path, uv_cache_dir)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^{re.escape(TABULATE)} \\\n\s+--hash=sha256:{digest}$", result.stdout, re.MULTILINE), (
        result.stdout
    )


def test_broken_sdist_resolves_without_building_but_fails_to_install(package_index_url, uv_cache_dir, tmp_path):
    result = compile_lock(BROKEN_REQUIREMENT + "\n", package_index_url, tmp_path, uv_cache_dir)
    assert result.returncode == 0, result.stderr  # from its PKG-INFO: the backend would have raised
    assert BROKEN_REQUIREMENT in result.stdout
    assert "--hash=sha256:" in result.stdout
    (tmp_path / "lock.txt").write_text(result.stdout)

    venv = tmp_path / "venv"
    created = uv("venv", str(venv), "--python", sys.executable, cache=uv_cache_dir)
    assert created.returncode == 0, created.stderr
    installed = uv(
        *("pip", "install", "--python", str(venv / "bin" / "python"), "--require-hashes", "--no-deps"),
        *("-r", str(tmp_path / "lock.txt"), "--index-url", package_index_url),
        cache=uv_cache_dir,
    )
    assert installed.returncode != 0
    assert BROKEN_BUILD_MESSAGE in installed.stderr
