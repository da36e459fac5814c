"""Fixtures of the agent's tests."""

from pathlib import Path

import pytest


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site's folder as `make run` lays it out: database, media, settings, the node's state."""
    site = tmp_path / "site"
    (site / "config").mkdir(parents=True)
    (site / "config" / "settings.py").write_text("SECRET_KEY = 'site-secret'\n")
    (site / "var" / "media").mkdir(parents=True)
    (site / "var" / "media" / "blob").write_text("private upload")
    (site / "var" / "db.sqlite3").write_text("password hashes")
    (site / "var" / "local-node" / "work").mkdir(parents=True)
    (site / "var" / "local-node" / "cache").mkdir(parents=True)
    (site / "var" / "local-node" / "token").write_text("rln_not_for_runs")
    return site
