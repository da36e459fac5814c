"""Serve the node agent as a wheel built on the fly from `<repo>/agent/`.

A compute node installs the agent straight from the site, with no package index:

    pip install http://SITE/agent/reprolab_agent-0.1.0-py3-none-any.whl

The wheel is pure Python, so it is written here with `zipfile` following the wheel spec
(PEP 427 / the binary distribution format) rather than by calling setuptools or `build`: the
package files, then `<name>-<version>.dist-info/` with METADATA (from `agent/pyproject.toml`),
WHEEL, entry_points.txt and RECORD (sha256 digests and sizes; RECORD itself last, unhashed).
Entries carry a fixed timestamp and mode, so the same sources always give the same bytes and the
same sha256. The result is cached, keyed by the sizes and mtimes of every input file, and rebuilt
when one changes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import re
import threading
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

AGENT_DIR = Path(__file__).resolve().parent.parent.parent / "agent"
GENERATOR = "reprolab agent_dist"
TAG = "py3-none-any"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry: reproducible bytes
EXCLUDED_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
README_TYPES = {".md": "text/markdown", ".rst": "text/x-rst"}


class AgentDistError(Exception):
    """The agent sources cannot be turned into a wheel (missing or unsupported pyproject.toml)."""


@dataclass(frozen=True)
class BuiltWheel:
    filename: str
    data: bytes
    sha256: str  # hex digest of `data`, for `#sha256=` links


_cache: dict[tuple[Any, ...], BuiltWheel] = {}
_lock = threading.Lock()


def _agent_dir(agent_dir: Path | None) -> Path:
    return Path(agent_dir) if agent_dir is not None else AGENT_DIR


def _project(agent_dir: Path) -> dict[str, Any]:
    """The [project] table of agent/pyproject.toml (the whole document under "__document__")."""
    pyproject = agent_dir / "pyproject.toml"
    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise AgentDistError(f"No agent sources: {pyproject} does not exist.") from error
    except tomllib.TOMLDecodeError as error:
        raise AgentDistError(f"{pyproject} is not valid TOML: {error}") from error
    project = document.get("project")
    if not isinstance(project, dict) or not project.get("name") or not isinstance(project.get("version"), str):
        raise AgentDistError(f"{pyproject} needs a [project] table with a static name and version.")
    return {**project, "__document__": document}


def _normalize(name: str) -> str:
    """Wheel file names use the distribution name with runs of -_. as a single "_"."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _normalize_extra(extra: str) -> str:
    return re.sub(r"[-_.]+", "-", extra).lower()  # PEP 685


def _stem(project: dict[str, Any]) -> str:
    return f"{_normalize(project['name'])}-{project['version'].replace('-', '_')}"


def agent_version(agent_dir: Path | None = None) -> str:
    """The agent's version, as agent/pyproject.toml declares it."""
    return str(_project(_agent_dir(agent_dir))["version"])


def wheel_filename(agent_dir: Path | None = None) -> str:
    """E.g. "reprolab_agent-0.1.0-py3-none-any.whl"."""
    return f"{_stem(_project(_agent_dir(agent_dir)))}-{TAG}.whl"


def _packages(project: dict[str, Any]) -> list[str]:
    setuptools = project["__document__"].get("tool", {}).get("setuptools", {})
    packages = setuptools.get("packages")
    if isinstance(packages, list) and packages:
        return [str(package) for package in packages]
    return [_normalize(project["name"])]


def _package_files(agent_dir: Path, project: dict[str, Any]) -> list[tuple[str, Path]]:
    """(name in the wheel, file) for every file of the packages, sorted, caches left out.

    Subfolders are included whole (setuptools would need each subpackage listed; here a
    subpackage is simply part of its package).
    """
    files: dict[str, Path] = {}
    for package in _packages(project):
        root = agent_dir / package.replace(".", "/")
        if not root.is_dir():
            raise AgentDistError(f"The agent package folder {root} does not exist.")
        for path in root.rglob("*"):
            relative = path.relative_to(agent_dir)
            if any(part in EXCLUDED_DIRS for part in relative.parts) or path.name.endswith(EXCLUDED_SUFFIXES):
                continue
            if path.is_file():
                files[relative.as_posix()] = path
    return sorted(files.items())


def _readme(agent_dir: Path, project: dict[str, Any]) -> tuple[str, str] | None:
    """(content type, text) of the project's readme, or None."""
    readme = project.get("readme")
    if isinstance(readme, str):
        path = agent_dir / readme
        return README_TYPES.get(path.suffix.lower(), "text/plain"), path.read_text(encoding="utf-8")
    if isinstance(readme, dict):
        if "file" in readme:
            path = agent_dir / readme["file"]
            text = path.read_text(encoding="utf-8")
        else:
            text = str(readme.get("text", ""))
            path = Path("README")
        return str(readme.get("content-type") or README_TYPES.get(path.suffix.lower(), "text/plain")), text
    return None


def _fingerprint(agent_dir: Path) -> tuple[Any, ...]:
    """Sizes and mtimes of every input: any edit to the agent changes it."""
    entries: list[tuple[str, int, int]] = []
    candidates = [agent_dir / "pyproject.toml", agent_dir / "README.md", agent_dir / "README.rst"]
    try:
        project = _project(agent_dir)
        candidates += [path for _, path in _package_files(agent_dir, project)]
        readme = project.get("readme")
        readme_file = readme if isinstance(readme, str) else readme.get("file") if isinstance(readme, dict) else None
        if readme_file:
            candidates.append(agent_dir / readme_file)
    except AgentDistError:
        pass  # building will raise the same error
    for path in candidates:
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((path.as_posix(), stat.st_mtime_ns, stat.st_size))
    return (agent_dir.resolve().as_posix(), tuple(sorted(set(entries))))


def _header_value(value: Any) -> str:
    return " ".join(str(value).split())


def _requirement_with_extra(requirement: str, extra: str) -> str:
    requirement, _, marker = requirement.partition(";")
    condition = f'extra == "{extra}"'
    if marker.strip():
        condition = f"({marker.strip()}) and {condition}"
    return f"{requirement.strip()}; {condition}"


def _metadata(agent_dir: Path, project: dict[str, Any]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
    ]
    if project.get("description"):
        lines.append(f"Summary: {_header_value(project['description'])}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {_header_value(project['requires-python'])}")
    lines += [f"Requires-Dist: {_header_value(requirement)}" for requirement in project.get("dependencies", [])]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        name = _normalize_extra(extra)
        lines.append(f"Provides-Extra: {name}")
        lines += [
            f"Requires-Dist: {_requirement_with_extra(_header_value(requirement), name)}"
            for requirement in requirements
        ]
    readme = _readme(agent_dir, project)
    if readme is None:
        return "\n".join(lines) + "\n"
    content_type, text = readme
    lines.append(f"Description-Content-Type: {content_type}")
    return "\n".join(lines) + "\n\n" + text


def _entry_points(project: dict[str, Any]) -> str | None:
    groups: dict[str, dict[str, str]] = {}
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    if project.get("gui-scripts"):
        groups["gui_scripts"] = project["gui-scripts"]
    for group, entries in project.get("entry-points", {}).items():
        groups[group] = entries
    if not groups:
        return None
    sections = []
    for group, entries in groups.items():
        body = "".join(f"{name} = {target}\n" for name, target in entries.items())
        sections.append(f"[{group}]\n{body}")
    return "\n".join(sections)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"sha256={digest}"


def _build(agent_dir: Path) -> BuiltWheel:
    project = _project(agent_dir)
    stem = _stem(project)
    dist_info = f"{stem}.dist-info"
    contents: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in _package_files(agent_dir, project)]
    contents.append((f"{dist_info}/METADATA", _metadata(agent_dir, project).encode("utf-8")))
    wheel = f"Wheel-Version: 1.0\nGenerator: {GENERATOR}\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    contents.append((f"{dist_info}/WHEEL", wheel.encode("utf-8")))
    entry_points = _entry_points(project)
    if entry_points is not None:
        contents.append((f"{dist_info}/entry_points.txt", entry_points.encode("utf-8")))

    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in contents:
        writer.writerow([name, _record_hash(data), len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    contents.append((f"{dist_info}/RECORD", record.getvalue().encode("utf-8")))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in contents:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            archive.writestr(info, data)
    data = buffer.getvalue()
    return BuiltWheel(filename=f"{stem}-{TAG}.whl", data=data, sha256=hashlib.sha256(data).hexdigest())


def built_wheel(agent_dir: Path | None = None) -> BuiltWheel:
    """The wheel with its file name and digest, from the cache while no input file has changed."""
    directory = _agent_dir(agent_dir)
    with _lock:
        fingerprint = _fingerprint(directory)
        cached = _cache.get(fingerprint)
        if cached is not None:
            return cached
        built = _build(directory)
        if _fingerprint(directory) == fingerprint:  # unchanged while we read: safe to keep
            _cache.clear()  # only the current build is worth keeping
            _cache[fingerprint] = built
        return built


def build_wheel(agent_dir: Path | None = None) -> bytes:
    """The bytes of `wheel_filename()`."""
    return built_wheel(agent_dir).data


def wheel_sha256(agent_dir: Path | None = None) -> str:
    return built_wheel(agent_dir).sha256


@require_safe
def agent_wheel(request: HttpRequest, filename: str) -> HttpResponse:
    """The agent wheel, for `pip install http://SITE/agent/<wheel file name>`."""
    built = built_wheel()
    if filename != built.filename:
        raise Http404(f"No such file; the agent wheel is {built.filename}.")
    response = HttpResponse(built.data, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{built.filename}"'
    response["Content-Length"] = str(len(built.data))
    response["ETag"] = f'"{built.sha256}"'
    response["Cache-Control"] = "no-cache"  # same URL, new bytes when the agent changes: revalidate
    return response


@require_safe
def agent_index(request: HttpRequest) -> HttpResponse:
    """A PEP 503-style page linking the wheel with its sha256, for `pip install --find-links`.

    The link is relative, to a wheel in the same folder as this page: serve the page at /agent/
    and the wheel at /agent/<wheel file name>.
    """
    built = built_wheel()
    project = _project(AGENT_DIR)
    folder = "" if request.path.endswith("/") else request.path.rsplit("/", 1)[-1] + "/"  # "/agent" -> "agent/"
    href = folder + built.filename
    requires_python = project.get("requires-python")
    attributes = f' data-requires-python="{html.escape(str(requires_python))}"' if requires_python else ""
    name = html.escape(str(project["name"]))
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        '<meta name="pypi:repository-version" content="1.0">\n'
        f"<title>Links for {name}</title>\n</head>\n<body>\n"
        f"<h1>Links for {name}</h1>\n"
        f'<a href="{html.escape(href)}#sha256={built.sha256}"{attributes}>{html.escape(built.filename)}</a><br>\n'
        "</body>\n</html>\n"
    )
    return HttpResponse(page, content_type="text/html; charset=utf-8")
