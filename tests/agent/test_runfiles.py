"""What a run leaves in its folder is read back by the agent without ever blocking, following a
link or recursing past a limit (reprolab_agent.runfiles and the watch's folder measure)."""

import os
import time
from pathlib import Path

import pytest
from reprolab_agent.limits import folder_usage
from reprolab_agent.runfiles import TooLarge, hand_over, read_regular, regular_files, remove_tree


def deep(root: Path, depth: int) -> Path:
    """Folders `depth` deep (one by one: os.makedirs itself recurses)."""
    path = root
    path.mkdir()
    for _ in range(depth):
        path = path / "d"
        path.mkdir()
    (path / "bottom.txt").write_text("at the bottom")
    return path


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "_output.ipynb"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        read_regular(fifo)
    assert time.monotonic() - started < 1


def test_a_sparse_file_past_the_limit_is_refused_unread(tmp_path):
    sparse = tmp_path / "_output.ipynb"
    with sparse.open("wb") as handle:
        handle.truncate(400 * 2**20)
    assert sparse.stat().st_blocks == 0
    with pytest.raises(TooLarge):
        read_regular(sparse, limit=2**20)


def test_a_link_is_refused(tmp_path):
    (tmp_path / "secret").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        read_regular(tmp_path / "link")


def test_folders_nested_past_the_recursion_limit_are_walked_measured_and_removed(tmp_path):
    root = tmp_path / "run"
    deep(root, 1500)
    assert [p.name for p in regular_files(root)] == ["bottom.txt"]
    size, entries = folder_usage(root)
    assert entries == 1501
    assert size >= 1500 * 4096  # every folder's own blocks count
    if os.geteuid() == 0:
        hand_over(root, 60199, 60199, files=True)
        assert (root / "d").stat().st_uid == 60199
    remove_tree(root)
    assert not root.exists()
