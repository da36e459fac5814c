"""Reading a declaration: a requirements.txt, a pyproject.toml with dependencies, or a uv.lock,
into the requirement lines the resolver is given and the Python it asks for.

Only requirements by name (with versions, extras, markers and hashes) are accepted. Options
(`-r`, `-e`, `--index-url`, …) and direct references (URLs, paths, git) are refused: resolving
runs on the site, which must neither read its own files, nor fetch from an address a user chose,
nor build anything a user sent. Packages come from the site's index (REPROLAB_PACKAGE_INDEX_URL).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .models import DeclarationKind

MAX_DECLARATION_BYTES = 256 * 1024
MAX_REQUIREMENTS = 500
MAX_REQUIRES_PYTHON = 100  # the lock keeps it normalised, in a column of 200
# A requirement line may carry its hashes (a pinned requirements file); nothing else.
HASH_OPTION = re.compile(r"\s--hash[=\s]\S+")


@dataclass(frozen=True)
class Declaration:
    kind: str
    name: str  # the uploaded file's name
    text: str
    requirements: list[str] = field(default_factory=list)  # one requirement per entry, hashes dropped
    requires_python: str = ""


def kind_of(filename: str) -> str:
    base = filename.rsplit("/", 1)[-1].lower()
    if base == "pyproject.toml":
        return DeclarationKind.PYPROJECT
    if base == "uv.lock":
        return DeclarationKind.UV_LOCK
    if base.endswith((".txt", ".in")):
        return DeclarationKind.REQUIREMENTS
    raise ValidationError(
        {"file": f"{filename!r} is not a declaration: upload a requirements .txt file, a pyproject.toml or a uv.lock."}
    )


def read_declaration(filename: str, content: bytes) -> Declaration:
    """The declaration in an uploaded file, or a ValidationError that says what is wrong."""
    kind = kind_of(filename)
    if len(content) > MAX_DECLARATION_BYTES:
        raise ValidationError({"file": f"A declaration may be at most {MAX_DECLARATION_BYTES // 1024} KiB."})
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError({"file": "A declaration must be UTF-8 text."}) from None
    if "\x00" in text:
        raise ValidationError({"file": "A declaration must be text (it holds a NUL byte)."})
    if kind == DeclarationKind.PYPROJECT:
        requirements, requires_python = _pyproject(text)
    elif kind == DeclarationKind.UV_LOCK:
        requirements, requires_python = _uv_lock(text)
    else:
        requirements, requires_python = _requirements_txt(text), ""
    if len(requirements) > MAX_REQUIREMENTS:
        raise ValidationError({"file": f"A declaration may list at most {MAX_REQUIREMENTS} requirements."})
    if len(requires_python) > MAX_REQUIRES_PYTHON:
        raise ValidationError({"file": f"requires-python may be at most {MAX_REQUIRES_PYTHON} characters."})
    if requires_python:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise ValidationError(
                {"file": f"requires-python {requires_python!r} is not a version specifier."}
            ) from None
    return Declaration(kind, filename.rsplit("/", 1)[-1], text, requirements, requires_python)


def _requirement(text: str, where: str) -> str:
    """One requirement by name, normalised by packaging; refused with the reason otherwise."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise ValidationError({"file": f"{where}: {text!r} is not a requirement ({error})."}) from None
    if requirement.url:
        raise ValidationError(
            {"file": f"{where}: {requirement.name} names a URL or path; only packages from the index are accepted."}
        )
    return str(requirement)


def _requirements_txt(text: str) -> list[str]:
    # Joined continuation lines, comments dropped (pip's rules: ` #` starts a comment).
    logical = re.sub(r"\\\r?\n", " ", text)
    requirements = []
    for number, raw in enumerate(logical.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            option = line.split()[0]
            raise ValidationError(
                {
                    "file": f"line {number}: the option {option} is not accepted in a declaration; "
                    "list packages only (the site's package index is used)."
                }
            )
        requirements.append(_requirement(HASH_OPTION.sub("", f" {line}").strip(), f"line {number}"))
    return requirements


def _toml(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValidationError({"file": f"{name} is not valid TOML: {error}."}) from None
    except RecursionError:  # tables or arrays nested thousands deep
        raise ValidationError({"file": f"{name} nests too deeply to be a declaration."}) from None


def _pyproject(text: str) -> tuple[list[str], str]:
    project = _toml(text, "pyproject.toml").get("project")
    if not isinstance(project, dict):
        raise ValidationError({"file": "pyproject.toml has no [project] table to read dependencies from."})
    dependencies = project.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise ValidationError({"file": "pyproject.toml: [project] dependencies must be a list of strings."})
    requires_python = project.get("requires-python", "")
    if not isinstance(requires_python, str):
        raise ValidationError({"file": "pyproject.toml: requires-python must be a string."})
    return [_requirement(d, f"dependency {i + 1}") for i, d in enumerate(dependencies)], requires_python


def _uv_lock(text: str) -> tuple[list[str], str]:
    """A uv.lock's packages from an index, as exact pins (the resolver keeps them and adds hashes).
    The project's own package (editable or virtual) is not installed; packages from git, a URL or
    a path are refused, as in a requirements file."""
    lock = _toml(text, "uv.lock")
    packages = lock.get("package", [])
    requires_python = lock.get("requires-python", "")
    if not isinstance(packages, list) or not isinstance(requires_python, str):
        raise ValidationError({"file": "uv.lock: not a lock file uv wrote (no [[package]] list)."})
    pins: dict[str, str] = {}
    for package in packages:
        if not isinstance(package, dict) or not isinstance(package.get("name"), str):
            raise ValidationError({"file": "uv.lock: every [[package]] needs a name."})
        name = package["name"]
        source = package.get("source", {})
        source = source if isinstance(source, dict) else {}
        if "editable" in source or "virtual" in source:
            continue  # the project itself
        if "registry" not in source:
            raise ValidationError(
                {
                    "file": f"uv.lock: {name} comes from {', '.join(source) or 'nowhere'}; only index packages are accepted."
                }
            )
        version = package.get("version")
        if not isinstance(version, str):
            raise ValidationError({"file": f"uv.lock: {name} has no version."})
        if name in pins and pins[name] != version:
            raise ValidationError(
                {
                    "file": f"uv.lock: {name} is locked at two versions ({pins[name]} and {version}) for different "
                    "platforms; export the lock for this platform (uv export --format requirements-txt) and upload that."
                }
            )
        pins[name] = version
    return [_requirement(f"{name}=={version}", f"uv.lock {name}") for name, version in sorted(pins.items())], (
        requires_python
    )
