"""Resolving a declaration into a lock with uv (`uv pip compile --generate-hashes`), once, on the
site.

The lock is for Linux (nodes run Linux) and the oldest supported Python the declaration allows,
from wheels only (`--no-build`: resolving must never run a package's build code on the site;
nodes install with `--no-build` too). ipykernel is added to every declaration: a node runs the
notebook on a kernel of the environment itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from rest_framework.exceptions import APIException

from .declarations import Declaration

KERNEL_REQUIREMENT = "ipykernel"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")
MAX_MESSAGE = 3000
# What uv may take from the site's environment: how to reach the index (proxies, certificates),
# nothing else (no uv.toml, no UV_* settings of whoever started the site).
NETWORK_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


class ResolverUnavailable(APIException):
    status_code = 503
    default_detail = "The resolver could not run; try again later."
    default_code = "resolver_unavailable"


@dataclass(frozen=True)
class Resolved:
    lock: str
    sha256: str
    packages: list[dict[str, str]]
    requires_python: str  # normalised
    python_version: str
    platform: str
    resolver: str


@cache
def uv_binary() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


@cache
def uv_version() -> str:
    done = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or "uv"


def target_python(requires_python: str) -> str:
    """The Python the lock is resolved for: the site's default (REPROLAB_ENVIRONMENT_PYTHON) when
    the declaration allows it, else the oldest supported one it allows."""
    default = settings.REPROLAB_ENVIRONMENT_PYTHON
    if not requires_python:
        return default
    allowed = SpecifierSet(requires_python)
    candidates = [default, *settings.REPROLAB_ENVIRONMENT_PYTHONS]
    for version in candidates:
        if allowed.contains(f"{version}.0", prereleases=True) or allowed.contains(f"{version}.99", prereleases=True):
            return version
    raise ValidationError(
        {
            "file": f"requires-python {requires_python} allows none of the Pythons this site's nodes run "
            f"({', '.join(sorted(set(candidates)))})."
        }
    )


def lock_header(*, python_version: str, platform: str, requires_python: str, layered: bool) -> str:
    """The lock's first lines: comments that pip and uv skip, and that make the lock's sha256
    name everything a node's build depends on."""
    lines = [
        "# ReproLab environment lock, resolved by the site with uv pip compile.",
        f"# python: {python_version}",
        f"# platform: {platform}",
        f"# requires-python: {requires_python or 'any'}",
        f"# layered: {'yes' if layered else 'no'}",
    ]
    return "\n".join(lines) + "\n"


def parse_pins(lock: str) -> list[dict[str, str]]:
    packages = []
    for line in lock.splitlines():
        match = PIN.match(line.strip())
        if match:
            package = {"name": canonicalize_name(match["name"]), "version": match["version"]}
            if match["marker"]:
                package["marker"] = match["marker"].strip()
            packages.append(package)
    return packages


def resolve(declaration: Declaration, *, layered: bool = False) -> Resolved:
    """The lock for `declaration`, or a ValidationError carrying the resolver's message."""
    requires_python = str(SpecifierSet(declaration.requires_python)) if declaration.requires_python else ""
    python_version = target_python(requires_python)
    platform = settings.REPROLAB_ENVIRONMENT_PLATFORM
    names = {canonicalize_name(Requirement(r).name) for r in declaration.requirements}
    wanted = [*declaration.requirements, *([] if KERNEL_REQUIREMENT in names else [KERNEL_REQUIREMENT])]
    with tempfile.TemporaryDirectory(prefix="reprolab-resolve-") as folder:
        source = Path(folder) / "requirements.in"
        source.write_text("\n".join(wanted) + "\n")
        command = [
            uv_binary(),
            "pip",
            "compile",
            str(source),
            "--generate-hashes",
            "--no-build",
            "--no-header",
            "--no-annotate",
            "--no-config",
            "--quiet",
            "--python-version",
            python_version,
            "--python-platform",
            platform,
        ]
        if settings.REPROLAB_PACKAGE_INDEX_URL:
            command += ["--index-url", settings.REPROLAB_PACKAGE_INDEX_URL]
        env = {
            **{name: os.environ[name] for name in NETWORK_VARIABLES if name in os.environ},
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": folder,
            "NO_COLOR": "1",
            "UV_CACHE_DIR": str(settings.REPROLAB_UV_CACHE_DIR),
            # The platform's certificate store, not only uv's bundled roots: institutions reach
            # PyPI through TLS-inspecting proxies whose root is installed there.
            "UV_SYSTEM_CERTS": "1",
        }
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=folder,
                env=env,
                timeout=settings.REPROLAB_RESOLVE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ResolverUnavailable(
                f"Resolving took longer than {settings.REPROLAB_RESOLVE_TIMEOUT:g} s; try again later."
            ) from None
        except OSError as error:
            raise ResolverUnavailable(f"The resolver could not start: {error}") from None
    if done.returncode != 0:
        message = done.stderr.strip().replace(str(source), declaration.name)[-MAX_MESSAGE:]
        raise ValidationError({"file": f"The declaration could not be resolved: {message}"})
    body = done.stdout.strip() + "\n"
    packages = parse_pins(body)
    if not any(p["name"] == KERNEL_REQUIREMENT and "marker" not in p for p in packages):
        raise ValidationError(
            {
                "file": f"The lock must install {KERNEL_REQUIREMENT} (the node runs the notebook on it) on every node: "
                "declare it without a marker, or not at all."
            }
        )
    lock = (
        lock_header(
            python_version=python_version,
            platform=platform,
            requires_python=requires_python,
            layered=layered,
        )
        + body
    )
    return Resolved(
        lock=lock,
        sha256=hashlib.sha256(lock.encode()).hexdigest(),
        packages=packages,
        requires_python=requires_python,
        python_version=python_version,
        platform=platform,
        resolver=uv_version(),
    )
