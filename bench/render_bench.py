"""Notebook rendering cost: our sandboxed child-process render and the cached path, against the
baseline of bare in-process nbconvert (HTMLExporter, as `jupyter nbconvert --to html` does).

Run: `make bench` (or `.venv/bin/python bench/render_bench.py [repeats]`). Prints medians.
"""

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
os.environ["DJANGO_MEDIA_ROOT"] = tempfile.mkdtemp(prefix="reprolab-bench-")


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    import django

    django.setup()
    import nbformat
    from nbconvert import HTMLExporter

    from apps.projects import rendering
    from apps.projects.render_worker import render

    source = (ROOT / "apps/projects/demo/linear-fit.ipynb").read_text()
    nb = nbformat.reads(source, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.from_notebook_node(nb)  # warm the baseline's imports and templates

    baseline = median_seconds(lambda: exporter.from_notebook_node(nb), repeats)
    sanitized_in_process = median_seconds(lambda: render(source), repeats)
    child = median_seconds(lambda: rendering._render_in_child(source.encode()), repeats)

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    class Version:  # the two fields render_version reads
        sha256 = "bench" * 12 + "abcd"
        storage_name = default_storage.save("bench.ipynb", ContentFile(source.encode()))

    version = cast(Any, Version)
    rendering.render_version(version)  # fills the cache
    cached = median_seconds(lambda: rendering.render_version(version), repeats)

    print(f"notebook: demo linear-fit ({len(source)} bytes), {repeats} repeats, medians")
    print(f"  baseline  bare nbconvert HTMLExporter, in process, warm : {baseline * 1000:8.1f} ms")
    print(f"  ours      sanitized (nh3) render, in process, warm      : {sanitized_in_process * 1000:8.1f} ms")
    print(
        f"  ours      first view: child process, time+memory capped : {child * 1000:8.1f} ms  ({child / baseline:.1f}x baseline)"
    )
    print(
        f"  ours      later views: cached render from storage       : {cached * 1000:8.1f} ms  ({cached / baseline:.2f}x baseline)"
    )


if __name__ == "__main__":
    main()
