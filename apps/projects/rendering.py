"""Sanitized, bounded, cached rendering of notebook versions.

Versions are immutable and content-addressed, so a render is cached by the notebook's sha256 in
storage and survives restarts. Rendering happens in a child process with a time and memory cap;
a failure is remembered briefly so a hostile notebook cannot make every request pay for it.
"""

import logging
import subprocess
import sys
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from .models import NotebookVersion

logger = logging.getLogger(__name__)

# Bump when the renderer's output changes, so old cached renders are not served.
RENDERER_VERSION = 4
FAILURE_TTL_SECONDS = 600


@dataclass(frozen=True)
class RenderResult:
    html: str | None
    error: str | None = None
    rate_limited: bool = False


def _take_render_slot(requester: str) -> bool:
    """A fixed one-minute window per requester, counted in the cache: only renders that start a
    child process count, so cached pages are never limited."""
    key = f"render-rate:{requester}:{int(time.time() // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=120)
        count = 1
    return count <= settings.REPROLAB_RENDERS_PER_MINUTE


def _render_name(sha256: str) -> str:
    return f"renders/v{RENDERER_VERSION}/{sha256[:2]}/{sha256}.html"


def _render_in_child(notebook_bytes: bytes) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "apps.projects.render_worker", str(settings.REPROLAB_RENDER_MEMORY_BYTES)],
        input=notebook_bytes,
        capture_output=True,
        timeout=settings.REPROLAB_RENDER_TIMEOUT,
        cwd=settings.BASE_DIR,
        check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"renderer exited with {completed.returncode}: {tail[0][:300]}")
    return completed.stdout.decode("utf-8")


def render_version(version: NotebookVersion, *, requester: str | None = None) -> RenderResult:
    """The sanitized HTML of a version, rendering it if needed. `requester` (a user or address)
    is rate-limited for fresh renders; None (the pre-render task) is not."""
    return render_stored(sha256=version.sha256, storage_name=version.storage_name, requester=requester)


def render_stored(*, sha256: str, storage_name: str, requester: str | None = None) -> RenderResult:
    """The sanitized HTML of any stored notebook (a version, or a run's executed output), cached
    by its sha256."""
    name = _render_name(sha256)
    if default_storage.exists(name):
        with default_storage.open(name, "rb") as cached:
            return RenderResult(html=cached.read().decode("utf-8"))
    failure_key = f"render-failed:{RENDERER_VERSION}:{sha256}"
    if (failure := cache.get(failure_key)) is not None:
        return RenderResult(html=None, error=failure)
    if requester is not None and not _take_render_slot(requester):
        return RenderResult(
            html=None, error="Too many notebooks rendered in the last minute; try again shortly.", rate_limited=True
        )
    with default_storage.open(storage_name, "rb") as source:
        notebook_bytes = source.read()
    try:
        html = _render_in_child(notebook_bytes)
    except subprocess.TimeoutExpired:
        error = f"Rendering took longer than {settings.REPROLAB_RENDER_TIMEOUT:g} seconds and was stopped."
    except (RuntimeError, UnicodeDecodeError, OSError) as exc:
        logger.warning("Could not render notebook %s: %s", sha256, exc)
        error = "The renderer could not process this notebook."
    else:
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(html.encode("utf-8")))
        return RenderResult(html=html)
    cache.set(failure_key, error, FAILURE_TTL_SECONDS)
    return RenderResult(html=None, error=error)
