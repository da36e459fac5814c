"""Compare two environment snapshots, most consequential differences first: packages (added,
removed, changed versions), then GPU/CUDA, Python, OS, CPU and memory, environment variables,
and the inputs (the same path with other content is a changed input). Pure functions of dicts."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# The parts of a snapshot that describe the software stack (what the fingerprint covers).
STACK_KEYS = ("python", "packages", "os", "gpus", "cuda")


def fingerprint(snapshot: dict[str, Any]) -> str:
    stack = {key: snapshot.get(key) for key in STACK_KEYS}
    stack["os"] = {k: (stack["os"] or {}).get(k) for k in ("system", "release", "machine")}
    stack["python"] = {k: (stack["python"] or {}).get(k) for k in ("version", "implementation")}
    return hashlib.sha256(json.dumps(stack, sort_keys=True, default=str).encode()).hexdigest()


def _mapping_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    added = {k: b[k] for k in sorted(b.keys() - a.keys())}
    removed = {k: a[k] for k in sorted(a.keys() - b.keys())}
    changed = {k: [a[k], b[k]] for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}
    return {"added": added, "removed": removed, "changed": changed}


def _field_changes(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...]) -> dict[str, list[Any]]:
    return {f: [a.get(f), b.get(f)] for f in fields if a.get(f) != b.get(f)}


def _gpu_key(gpu: dict[str, Any]) -> str:
    return f"{gpu.get('name')} ({gpu.get('memory_total_mb')} MB, cc {gpu.get('compute_capability')})"


def _inputs_by_path(snapshot: dict[str, Any]) -> dict[str, str]:
    return {i["path"]: i["sha256"] for i in snapshot.get("inputs", []) if "path" in i and "sha256" in i}


def environment_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from `a` to `b`, ordered by how likely it is to change results."""
    packages = _mapping_diff(a.get("packages", {}), b.get("packages", {}))
    gpus_a = sorted(_gpu_key(g) for g in a.get("gpus", []))
    gpus_b = sorted(_gpu_key(g) for g in b.get("gpus", []))
    sections: dict[str, Any] = {
        "packages": packages,
        "gpus": [gpus_a, gpus_b] if gpus_a != gpus_b else None,
        "cuda": _field_changes(
            a.get("cuda", {}), b.get("cuda", {}), ("runtime_version", "driver_version", "cupy_version")
        ),
        "python": _field_changes(a.get("python", {}), b.get("python", {}), ("version", "implementation")),
        "os": _field_changes(a.get("os", {}), b.get("os", {}), ("system", "release", "machine", "libc")),
        "cpu": _field_changes(
            {**a.get("cpu", {}), "memory_mb": a.get("memory_mb")},
            {**b.get("cpu", {}), "memory_mb": b.get("memory_mb")},
            ("model", "count", "memory_mb"),
        ),
        "env": _mapping_diff(a.get("env", {}), b.get("env", {})),
        "inputs": _mapping_diff(_inputs_by_path(a), _inputs_by_path(b)),
    }
    changes = (
        sum(len(packages[k]) for k in ("added", "removed", "changed"))
        + (1 if sections["gpus"] else 0)
        + sum(len(sections[k]) for k in ("cuda", "python", "os", "cpu"))
        + sum(len(sections[s][k]) for s in ("env", "inputs") for k in ("added", "removed", "changed"))
    )
    return {"identical": changes == 0, "changes": changes, "same_stack": fingerprint(a) == fingerprint(b), **sections}
