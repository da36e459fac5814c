"""Fixtures of the declared-environment tests: a real package index and an isolated uv cache."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package_index import ensure_wheelhouse, package_index


@pytest.fixture(scope="session")
def package_index_url() -> Iterator[str]:
    """The simple-API URL of a local pypiserver holding the test wheelhouse, one for the session.

    Downloading the wheels happens once per checkout (var/package-index), starting the server once
    per session (a fraction of a second); it is stopped when the session ends.
    """
    folder = ensure_wheelhouse()
    with package_index(folder) as url:
        yield url


@pytest.fixture(scope="session")
def uv_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A uv cache of the session's own: nothing cached by earlier runs or by the developer's uv
    (or fetched from PyPI) can stand in for what the local index serves."""
    return tmp_path_factory.mktemp("uv-cache")
