"""The human report of a run: facts, a FAIR self-assessment checklist and concrete
recommendations, derived from the run, its notebook, its environment and its reproductions."""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.files.storage import default_storage

from apps.compute.models import Run

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
    ]

    recommendations = []
    unpinned = _unpinned(code)
    if unpinned:
        recommendations.append(
            f"Pin the packages the notebook installs ({', '.join(sorted(set(unpinned))[:10])}): "
            "`pip install name==version`, so a rerun gets the same versions."
        )
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
        },
        "reproductions": [{"id": r["id"], "verdict": r["verdict"]} for r in reproductions],
        "checklist": checklist,
        "recommendations": recommendations,
    }
