"""The human report of a run: facts, a FAIR self-assessment checklist and concrete
recommendations, derived from the run, its notebook, its environment and its reproductions.

Its environment is either a declared one, locked (apps.environments: the run's node installed
exactly the lock's versions and hashes, and the snapshot says whether what was installed matched),
or the node's base environment, whatever that node had installed. The report says which: a locked
run needs no advice to pin packages, and a base-environment run is the one to advise declaring."""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.files.storage import default_storage

from apps.compute.models import Run
from apps.environments.models import EnvironmentLock

from .models import EnvironmentSnapshot, Reproduction

OPEN_FORMATS = {
    "csv", "tsv", "txt", "json", "jsonl", "parquet", "npy", "npz", "h5", "hdf5", "nc", "zarr", "png",
    "jpg", "jpeg", "tif", "tiff", "svg", "xml", "ipynb", "md", "fits", "arrow", "feather", "yaml", "yml",
}  # fmt: skip
RANDOM_USE = re.compile(r"\b(random\.|np\.random|numpy\.random|torch\.rand|default_rng\(|tf\.random)")
SEEDING = re.compile(r"(\.seed\(|manual_seed\(|default_rng\(\s*\d|set_seed\(|PYTHONHASHSEED)")
UNPINNED_INSTALL = re.compile(r"^\s*[!%]\s*pip\s+install\s+(?P<args>.+)$", re.M)


def _notebook_code(run: Run) -> str:
    with default_storage.open(run.notebook_version.storage_name, "rb") as handle:
        nb = json.load(handle)
    sources = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else str(source))
    return "\n".join(sources)


def _unpinned(code: str) -> list[str]:
    found = []
    for match in UNPINNED_INSTALL.finditer(code):
        for token in match.group("args").split():
            if token.startswith("-") or "==" in token or token.startswith(("http", "git+", ".", "/")):
                continue
            found.append(token)
    return found


def _lock_facts(lock: EnvironmentLock, declared: dict[str, Any], declaration_name: str) -> dict[str, Any]:
    """The lock, and what the snapshot's `environment` part says of it. `matches_lock` is None when
    the snapshot does not say (an agent that predates declared environments, or no snapshot)."""
    same_lock = declared.get("declared") is True and declared.get("sha256") == lock.sha256
    base_packages = declared.get("base_packages") if same_lock else None
    return {
        "sha256": lock.sha256,
        "packages": len(lock.packages),
        "python": lock.python_version,
        "platform": lock.platform,
        "declaration": declaration_name,
        "layered": lock.layered,
        "resolver": lock.resolver,
        "matches_lock": declared.get("matches_lock") if same_lock else None,
        "differences": list(declared.get("differences") or [])[:10] if same_lock else [],
        "base_packages": len(base_packages) if isinstance(base_packages, dict) else None,
    }


def _matching(lock: dict[str, Any]) -> str:
    if lock["matches_lock"] is True:
        return "the installed packages matched the lock exactly"
    if lock["matches_lock"] is False:
        named = "; ".join(lock["differences"][:3])
        return (
            f"the installed packages did not match the lock: {named}"
            if named
            else "the installed packages did not match the lock"
        )
    return "the snapshot does not say whether the installed packages matched the lock"


def _environment_statement(lock: dict[str, Any] | None, node: str) -> str:
    """One sentence on what the run's packages were: the lock's, or its node's base environment's."""
    if lock is None:
        return (
            f"The run used the node's base environment (nothing declared): its packages are whatever "
            f"{node} had installed."
        )
    statement = (
        f"Locked environment {lock['sha256'][:12]} (sha256 {lock['sha256']}): {lock['packages']} packages "
        f"pinned with hashes for Python {lock['python']}, declared in {lock['declaration']}; {_matching(lock)}."
    )
    if lock["layered"]:
        counted = f" ({lock['base_packages']} base packages recorded)" if lock["base_packages"] is not None else ""
        statement += (
            f" It is layered over the node's base packages: the run depends on what {node} had installed too{counted}."
        )
    return statement


def _lock_check(lock: dict[str, Any] | None) -> dict[str, Any]:
    """The checklist's line on the environment: locked and installed as locked, or not."""
    if lock is None:
        return {
            "item": "Locked environment",
            "ok": False,
            "detail": "Nothing declared: the run used its node's base environment, unpinned.",
        }
    return {
        "item": "Locked environment",
        "ok": lock["matches_lock"] is not False,
        "detail": f"sha256 {lock['sha256']}, {lock['packages']} packages; {_matching(lock)}"
        + (", over the node's base packages (layered)." if lock["layered"] else "."),
    }


def _environment_recommendations(
    lock: dict[str, Any] | None, locked_names: set[str], installs: list[str], project_slug: str, node: str
) -> list[str]:
    """Without a lock: declare one (which also pins what the notebook installs). With one: only
    what still escapes it (installs of packages it lacks, a mismatch, the layered base)."""
    if lock is None:
        advice = []
        if installs:
            advice.append(
                f"Pin the packages the notebook installs ({', '.join(sorted(set(installs))[:10])}): "
                "`pip install name==version`, so a rerun gets the same versions."
            )
        advice.append(
            "The run used the node's base environment (nothing declared): declare the packages the notebook "
            f"needs, so every run installs the same locked versions: PUT a requirements.txt, pyproject.toml or "
            f"uv.lock to /api/v1/projects/{project_slug}/environment/, or upload a requirements.txt beside the "
            "notebook."
        )
        return advice
    advice = []
    outside = sorted({name for name in installs if _canonical(name) not in locked_names})
    if outside:
        advice.append(
            f"The notebook installs packages its locked environment lacks ({', '.join(outside[:10])}): add them "
            f"to {lock['declaration']}, so the lock pins them too."
        )
    if lock["matches_lock"] is False:
        advice.append(
            f"What {node} installed differed from the lock ({'; '.join(lock['differences'][:3])}): rerun on "
            "another node, and tell the node's operator."
        )
    if lock["layered"]:
        advice.append(
            f"The environment is layered over {node}'s base packages, so a node with a different base can change "
            "the results: declare the base packages the notebook imports too, or declare the environment closed "
            "(not layered)."
        )
    return advice


def _canonical(requirement: str) -> str:
    """A package name as the lock spells it (PEP 503), from an install argument such as `Pandas[xl]>=2`."""
    name = re.split(r"[\[<>=!~;@\s]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def build_report(run: Run) -> dict[str, Any]:
    version = run.notebook_version
    project = run.project
    snapshot = EnvironmentSnapshot.objects.filter(run=run).first()
    environment = snapshot.data if snapshot else {}
    reproductions = list(
        Reproduction.objects.filter(original=run).order_by("-created_at").values("id", "verdict", "report")
    )
    datasets = list(run.input_datasets.select_related("dataset").prefetch_related("files"))
    data_files = [f for dv in datasets for f in dv.files.all()]
    code = _notebook_code(run)
    node = f"node {run.node.name}" if run.node else "the node"
    declared = run.environment_lock
    name = run.environment_declaration.name if run.environment_declaration else "its declaration"
    lock = _lock_facts(declared, environment.get("environment") or {}, name) if declared else None
    locked_names = {_canonical(p.get("name", "")) for p in declared.packages} if declared else set()

    checklist = [
        {
            "item": "Persistent identifier",
            "ok": False,
            # Nothing here registers DOIs (publishing gives a landing page and DataCite metadata,
            # not a DOI): say so, rather than promise one.
            "detail": "Identified by its URL and the notebook's sha256 (content-addressed), not by a DOI: "
            "this site registers DOIs only when its operator configures DataCite registration.",
        },
        {
            "item": "License",
            "ok": bool(project.license),
            "detail": f"SPDX {project.license}"
            if project.license
            else "The project has no license: others cannot reuse it.",
        },
        {
            "item": "Provenance",
            "ok": snapshot is not None,
            "detail": "Environment snapshot and lineage recorded."
            if snapshot
            else "No environment snapshot (the run never started).",
        },
        {
            "item": "Checksums",
            "ok": bool(version.sha256) and (bool(run.output_sha256) or not run.output_storage_name),
            "detail": "sha256 of the notebook, every input file and the output.",
        },
        {
            "item": "Open formats",
            "ok": all(f.path.rsplit(".", 1)[-1].lower() in OPEN_FORMATS for f in data_files),
            "detail": ", ".join(sorted({f.path.rsplit(".", 1)[-1].lower() for f in data_files})) or "no data files",
        },
        {
            "item": "Machine-readable metadata",
            "ok": True,
            "detail": "RO-Crate (Process Run Crate), PROV-JSON lineage"
            + (", schema.org JSON-LD on the public page" if project.is_public else ""),
        },
        {
            "item": "Reproduced",
            "ok": any(r["verdict"] in ("reproduced", "reproduced_within_tolerance") for r in reproductions),
            "detail": reproductions[0]["verdict"].replace("_", " ")
            if reproductions
            else "Not checked yet: use Reproduce.",
        },
        _lock_check(lock),
    ]

    recommendations = _environment_recommendations(lock, locked_names, _unpinned(code), project.slug, node)
    flaky = any(c.get("flaky") for r in reproductions for c in (r["report"] or {}).get("cells", []))
    if RANDOM_USE.search(code) and not SEEDING.search(code):
        recommendations.append("The notebook uses random numbers without setting a seed: seed every generator it uses.")
    elif flaky:
        recommendations.append("Reruns vary (flaky cells): look for unseeded randomness, time or ordering dependence.")
    if data_files and not project.license:
        recommendations.append("The data has no license: choose one (e.g. CC-BY-4.0) so others may reuse it.")
    gpus = environment.get("gpus") or []
    env = environment.get("env") or {}
    if gpus and "CUBLAS_WORKSPACE_CONFIG" not in env:
        recommendations.append(
            "GPU results can vary between runs: set CUBLAS_WORKSPACE_CONFIG=:4096:8 and your framework's "
            "deterministic mode (e.g. torch.use_deterministic_algorithms(True)), or compare within tolerance."
        )
    not_open = sorted({f.path for f in data_files if f.path.rsplit(".", 1)[-1].lower() not in OPEN_FORMATS})
    if not_open:
        recommendations.append(f"Prefer open, documented formats for: {', '.join(not_open[:5])}.")

    return {
        "run": run.pk,
        "state": run.state,
        "notebook": {"path": version.notebook.path, "version": version.number, "sha256": version.sha256},
        "parameters": run.parameters,
        "datasets": [{"name": dv.dataset.name, "version": dv.number, "files": len(dv.files.all())} for dv in datasets],
        "node": run.node.name if run.node else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "environment": {
            "python": (environment.get("python") or {}).get("version"),
            "os": " ".join(
                filter(
                    None, [(environment.get("os") or {}).get("system"), (environment.get("os") or {}).get("release")]
                )
            ),
            "cpu": (environment.get("cpu") or {}).get("model"),
            "gpus": [g.get("name") for g in gpus],
            "packages": len(environment.get("packages") or {}),
            "fingerprint": snapshot.fingerprint if snapshot else None,
            "declared": lock is not None,
            "lock": lock,
            "statement": _environment_statement(lock, node),
        },
        "reproductions": [{"id": r["id"], "verdict": r["verdict"]} for r in reproductions],
        "checklist": checklist,
        "recommendations": recommendations,
    }
