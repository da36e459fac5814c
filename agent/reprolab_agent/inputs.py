"""A run's inputs, placed in its working directory before its job starts: the notebook (inline in
the claim when it is small, else fetched) and the dataset files from the node's content-addressed
cache. The run reads them; it can never change the cache through them."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

from . import protocol
from .cache import FileCache
from .environment import KernelChoice, choose_kernel
from .lease import RunContext

NOTEBOOK = protocol.NOTEBOOK_FILE
OUTPUT = protocol.OUTPUT_FILE


def notebook_body(ctx: RunContext) -> bytes:
    """The run's notebook, inline in the claim when it is small, else fetched; checked against
    its sha256 (RuntimeError when it arrived corrupted)."""
    run = ctx.run
    inline = run.get(protocol.RUN_NOTEBOOK_INLINE)
    body = base64.b64decode(inline) if isinstance(inline, str) else ctx.call("GET", protocol.URL_NOTEBOOK).body
    if hashlib.sha256(body).hexdigest() != run["notebook_sha256"]:
        raise RuntimeError("the notebook arrived corrupted (sha256 mismatch)")
    return body


def place_notebook(ctx: RunContext, *, kernel_override: str | None) -> tuple[Path, KernelChoice]:
    """Write the notebook into the working directory; returns it and the kernel it runs on (a
    notebook that names no kernel runs on its language's, python3 for Python, as Jupyter does)."""
    body = notebook_body(ctx)
    notebook = ctx.workdir / NOTEBOOK
    notebook.write_bytes(body)
    notebook.chmod(0o644)
    try:
        metadata = json.loads(body).get("metadata", {})
    except (ValueError, RecursionError, AttributeError) as error:
        raise RuntimeError(f"the notebook is not readable JSON: {error}") from error
    return notebook, choose_kernel(metadata if isinstance(metadata, dict) else {}, override=kernel_override)


def place_files(ctx: RunContext, cache: FileCache, *, copy: bool) -> None:
    """The run's dataset files, from the cache. `copy` when the run has the agent's own uid (a
    hard link would let it rewrite the cached file for later runs); a run uid gets links to files
    it can read and not write. Never written through a file already there: two inputs at one
    path, or an input named like the agent's own files, are refused (RuntimeError)."""
    seen: set[str] = set()
    for item in ctx.run["files"]:
        path = str(item["path"])
        if path in seen or path.split("/", 1)[0] in protocol.RESERVED_RUN_NAMES:
            raise RuntimeError(f"input path {path!r} is given twice or is reserved for the agent")
        seen.add(path)
        target = (ctx.workdir / path).resolve()
        if ctx.workdir.resolve() not in target.parents:  # the site validates paths; check anyway
            raise RuntimeError(f"unsafe input path {path!r}")
        cached = cache.fetch(ctx.client, item["url"], item["sha256"], ctx.token)
        try:
            _place(cached, target, copy=copy)
        except OSError as error:  # e.g. "a" and "a/b" both given: a file where a folder must be
            raise RuntimeError(f"could not place input {path!r}: {error}") from error


def _place(cached: Path, target: Path, *, copy: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cached, 0o644)
    if not copy:
        try:
            os.link(cached, target)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:  # only another file system means "copy instead"
                raise
    # A fresh file renamed into place: never a write through a name that already exists.
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(cached, partial)
    os.replace(partial, target)
