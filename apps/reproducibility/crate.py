"""An RO-Crate of a run, following the Process Run Crate profile 0.5, built with `rocrate`.

The crate holds the notebook, the executed notebook and the environment snapshot as files with
sha256 and size; input data files are listed as files with their sha256 (small ones are included,
large ones referenced by their download URL); the parameters are PropertyValues; the run is a
CreateAction (instrument papermill, object the inputs, result the output, agent, times, status)
listed in the root's `mentions`, which `rocrate` does not do by itself.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.core.files.storage import default_storage
from rocrate.model.contextentity import ContextEntity
from rocrate.rocrate import ROCrate

from apps.compute.models import Run, RunState
from apps.compute.selectors import final_artifacts

from .models import EnvironmentSnapshot

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WFRUN_TERMS = {
    "environment": "https://w3id.org/ro/terms/workflow-run#environment",
    "sha256": "https://w3id.org/ro/terms/workflow-run#sha256",
}
INLINE_DATA_MAX_BYTES = 10 * 1024 * 1024
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
