"""An RO-Crate of a run, following the Process Run Crate profile 0.5, built with `rocrate`.

The crate holds the notebook, the executed notebook and the environment snapshot as files with
sha256 and size; input data files are listed as files with their sha256 (small ones are included,
large ones referenced by their download URL); the parameters are PropertyValues; the run is a
CreateAction (instrument papermill, object the inputs, result the output, agent, times, status)
listed in the root's `mentions`, which `rocrate` does not do by itself.

A run whose node built its environment from a declared lock (apps.environments) has that lock in
the crate too, as one more input of the action (its `object`: what the execution consumed, in
Process Run Crate terms; `instrument` stays papermill, the one tool that ran), together with the
declaration it was resolved from (the lock's `isBasedOn`). A run in the node's base environment has
no lock, and its crate is as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.core.files.storage import default_storage
from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from apps.compute.models import Run, RunState
from apps.compute.selectors import final_artifacts
from apps.environments.models import Declaration, DeclarationKind, EnvironmentLock

from .models import EnvironmentSnapshot

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WFRUN_TERMS = {
    "environment": "https://w3id.org/ro/terms/workflow-run#environment",
    "sha256": "https://w3id.org/ro/terms/workflow-run#sha256",
}
INLINE_DATA_MAX_BYTES = 10 * 1024 * 1024
LOCK_PATH = "environment/requirements.lock.txt"
# pyproject.toml and uv.lock are TOML (application/toml, registered with IANA); a requirements
# file is plain text.
DECLARATION_FORMATS: dict[str, str] = {
    DeclarationKind.REQUIREMENTS: "text/plain",
    DeclarationKind.PYPROJECT: "application/toml",
    DeclarationKind.UV_LOCK: "application/toml",
}
DEFAULT_DECLARATION_NAMES: dict[str, str] = {
    DeclarationKind.REQUIREMENTS: "requirements.txt",
    DeclarationKind.PYPROJECT: "pyproject.toml",
    DeclarationKind.UV_LOCK: "uv.lock",
}
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
STATUS = {
    RunState.SUCCEEDED: "http://schema.org/CompletedActionStatus",
    RunState.FAILED: "http://schema.org/FailedActionStatus",
}


def _license_uri(spdx: str) -> str:
    return f"https://spdx.org/licenses/{spdx}" if spdx else "https://spdx.org/licenses/CC-BY-4.0"


def _copy_blob(storage_name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with default_storage.open(storage_name, "rb") as source, target.open("wb") as sink:
        while chunk := source.read(1024 * 1024):
            sink.write(chunk)
    return target


def _add_stored_file(
    crate: ROCrate, work: Path, *, storage_name: str, sha256: str, size: int, dest_path: str, url: str, name: str
) -> Any:
    """A stored blob as a File entity with sha256 and size: inside the crate up to
    INLINE_DATA_MAX_BYTES, referenced by its download URL above that."""
    properties = {"name": name, "sha256": sha256, "contentSize": str(size)}
    if size <= INLINE_DATA_MAX_BYTES:
        return crate.add_file(
            _copy_blob(storage_name, work / "blobs" / sha256), dest_path=dest_path, properties=properties
        )
    return crate.add_file(url, properties=properties)


def _add_text_file(crate: ROCrate, work: Path, text: str, *, dest_path: str, properties: dict[str, Any]) -> Any:
    """Text the site holds (not a stored blob) as a File entity, with the sha256 and size of its
    UTF-8 bytes: for a lock those are the bytes its sha256 names."""
    data = text.encode()
    source = work / "text" / dest_path
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    return crate.add_file(
        source,
        dest_path=dest_path,
        properties={**properties, "sha256": hashlib.sha256(data).hexdigest(), "contentSize": str(len(data))},
    )


def _declaration_path(declaration: Declaration) -> str:
    """Where the declaration goes: its uploaded file name, reduced to a safe base name (it became
    part of a URI path), and never the lock's own name."""
    name = UNSAFE_NAME_CHARACTERS.sub("_", declaration.name.rsplit("/", 1)[-1]).strip("._")
    name = name or DEFAULT_DECLARATION_NAMES.get(declaration.kind, "declaration.txt")
    path = f"environment/{name}"
    return f"environment/declared-{name}" if path == LOCK_PATH else path


def _lock_description(lock: EnvironmentLock) -> str:
    layering = (
        "layered over the node's base packages, so the run depends on those too"
        if lock.layered
        else "a closed environment: nothing from the node's base packages"
    )
    return (
        f"The lock the node built the run's environment from: environment sha256 {lock.sha256}, "
        f"{len(lock.packages)} packages pinned with hashes, resolved by {lock.resolver} for Python "
        f"{lock.python_version} on {lock.platform}; {layering}. Install it with "
        f"`pip install --require-hashes -r {LOCK_PATH.rsplit('/', 1)[-1]}`."
    )


def _add_environment_lock(crate: ROCrate, work: Path, lock: EnvironmentLock, declared: Declaration | None) -> Any:
    """The lock file and the run's project's declaration it was resolved from; returns the lock's
    entity, an input of the run. The declaration is not: the run never read it (the site's
    resolver did), so it is linked from the lock (`isBasedOn`) rather than from the action."""
    based_on = {}
    if declared is not None:
        based_on["isBasedOn"] = _add_text_file(
            crate,
            work,
            declared.text,
            dest_path=_declaration_path(declared),
            properties={
                "name": f"Declared environment ({declared.name})",
                "description": f"The environment as declared ({declared.get_kind_display()}), "
                f"which the site resolved into the lock {lock.sha256}.",
                "encodingFormat": DECLARATION_FORMATS.get(declared.kind, "text/plain"),
            },
        )
    return _add_text_file(
        crate,
        work,
        lock.lock,
        dest_path=LOCK_PATH,
        properties={
            "name": f"Environment lock {lock.short}",
            "description": _lock_description(lock),
            "encodingFormat": "text/plain",
            **based_on,
        },
    )


def build_run_crate(run: Run, destination: Path, *, base_url: str) -> Path:
    """Write the run's crate as a zip at `destination` and return it."""
    version = run.notebook_version
    notebook = version.notebook
    project = run.project
    snapshot = EnvironmentSnapshot.objects.filter(run=run).first()
    packages: dict[str, Any] = (snapshot.data.get("packages", {}) if snapshot else {}) or {}

    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        # Process Run Crate 0.5 is a profile of RO-Crate 1.1; its extra terms come from the
        # Workflow Run terms vocabulary.
        crate = ROCrate(version="1.1")
        crate.metadata.extra_terms.update(WFRUN_TERMS)
        crate.name = f"Run {run.pk} of {notebook.path} ({project.name})"
        crate.description = (
            f"Execution of notebook {notebook.path} version {version.number} with papermill on ReproLab, "
            f"with its parameters, inputs, environment and executed notebook."
        )
        crate.datePublished = (run.finished_at or run.created_at).isoformat()
        crate.license = _license_uri(project.license)
        profile = crate.add(
            ContextEntity(
                crate,
                PROCESS_RUN_CRATE,
                properties={"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
            )
        )
        crate.root_dataset["conformsTo"] = profile

        person = None
        if run.created_by:
            person = crate.add(
                ContextEntity(
                    crate,
                    f"#person-{run.created_by.username}",
                    properties={"@type": "Person", "name": run.created_by.username},
                )
            )
            crate.root_dataset["author"] = person

        notebook_file = crate.add_file(
            _copy_blob(version.storage_name, work / "notebook.ipynb"),
            dest_path=f"notebook/{notebook.name}",
            properties={
                "name": f"{notebook.path} (version {version.number})",
                "encodingFormat": "application/x-ipynb+json",
                "sha256": version.sha256,
                "contentSize": str(version.size),
            },
        )
        inputs: list[Any] = [notebook_file]
        for name, value in sorted(run.parameters.items()):
            inputs.append(
                crate.add(
                    ContextEntity(
                        crate,
                        f"#param-{name}",
                        properties={"@type": "PropertyValue", "name": name, "value": json.dumps(value)},
                    )
                )
            )
        if run.environment_lock is not None:
            inputs.append(_add_environment_lock(crate, work, run.environment_lock, run.environment_declaration))
        for dataset_version in run.input_datasets.select_related("dataset").prefetch_related("files"):
            for data_file in dataset_version.files.all():
                name = dataset_version.dataset.name
                inputs.append(
                    _add_stored_file(
                        crate,
                        work,
                        storage_name=data_file.storage_name,
                        sha256=data_file.sha256,
                        size=data_file.size,
                        dest_path=f"data/{name}/{data_file.path}",
                        url=f"{base_url}/p/{project.slug}/datasets/{name}/v{dataset_version.number}/{data_file.path}",
                        name=f"{name} v{dataset_version.number}: {data_file.path}",
                    )
                )

        results: list[Any] = []
        if run.output_storage_name:
            results.append(
                crate.add_file(
                    _copy_blob(run.output_storage_name, work / "output.ipynb"),
                    dest_path=f"output/{notebook.name.removesuffix('.ipynb')}-run{run.pk}.ipynb",
                    properties={
                        "name": f"Executed notebook of run {run.pk}",
                        "encodingFormat": "application/x-ipynb+json",
                        "sha256": run.output_sha256,
                        "contentSize": str(run.output_size or 0),
                    },
                )
            )
        for artifact in final_artifacts(run):
            results.append(
                _add_stored_file(
                    crate,
                    work,
                    storage_name=artifact.storage_name,
                    sha256=artifact.sha256,
                    size=artifact.size,
                    dest_path=f"artifacts/{artifact.path}",
                    url=f"{base_url}/api/v1/runs/{run.pk}/artifact/?path={quote(artifact.path)}",
                    name=f"Artifact {artifact.path}",
                )
            )
        if snapshot is not None:
            environment_path = work / "environment.json"
            environment_path.write_text(json.dumps(snapshot.data, indent=2, sort_keys=True))
            results.append(
                crate.add_file(
                    environment_path,
                    dest_path="environment.json",
                    properties={
                        "name": "Environment snapshot (packages, OS, CPU, GPU/CUDA, inputs)",
                        "encodingFormat": "application/json",
                        "sha256": hashlib.sha256(environment_path.read_bytes()).hexdigest(),
                    },
                )
            )

        papermill = crate.add(
            ContextEntity(
                crate,
                "https://github.com/nteract/papermill",
                properties={
                    "@type": "SoftwareApplication",
                    "name": "papermill",
                    "url": "https://papermill.readthedocs.io",
                    "version": packages.get("papermill", ""),
                },
            )
        )
        action_properties: dict[str, Any] = {
            "name": f"Run {run.pk} of {notebook.path}",
            "startTime": (run.started_at or run.created_at).isoformat(),
            "actionStatus": {"@id": STATUS.get(RunState(run.state), "http://schema.org/FailedActionStatus")},
        }
        if run.finished_at:
            action_properties["endTime"] = run.finished_at.isoformat()
        if run.error:
            action_properties["error"] = run.error
        action = crate.add_action(
            papermill, identifier=f"#run-{run.pk}", object=inputs, result=results, properties=action_properties
        )
        if person is not None:
            action["agent"] = person
        if snapshot is not None and snapshot.data.get("env"):
            action["environment"] = [
                crate.add(
                    ContextEntity(
                        crate, f"#env-{key}", properties={"@type": "PropertyValue", "name": key, "value": value}
                    )
                )
                for key, value in sorted(snapshot.data["env"].items())
            ]
        crate.root_dataset.append_to("mentions", action)
        crate.write_zip(str(destination))
    return destination
