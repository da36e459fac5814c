"""Writes for runs as their submitters see them: submitting, cancelling, and settling a run in a
final state (with the runs that depend on it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from reprolab_agent import protocol

from apps.accounts.models import User
from apps.environments.models import Declaration
from apps.environments.services import environment_for_run
from apps.projects.models import DatasetVersion, NotebookVersion, Project

from .. import signals
from ..models import ACTIVE_STATES, Run, RunKind, RunState
from ..parameters import validate_parameters
from ..queue_signal import announce_work
from ..requirements import clean_requirements
from .events import append_server_event, append_state_event


def _check_same_project(
    project: Project,
    notebook_version: NotebookVersion,
    dataset_versions: Sequence[DatasetVersion],
    depends_on: Sequence[Run],
    reference_run: Run | None,
) -> None:
    if notebook_version.notebook.project_id != project.pk:
        raise ValidationError({"notebook_version": "The notebook version is not in this project."})
    for dataset_version in dataset_versions:
        if dataset_version.dataset.project_id != project.pk:
            raise ValidationError({"datasets": "Input datasets must belong to the run's project."})
    for dependency in depends_on:
        if dependency.project_id != project.pk:
            raise ValidationError({"depends_on": f"Run {dependency.pk} is not in this project."})
    if reference_run is not None and reference_run.project_id != project.pk:
        raise ValidationError({"reference_run": f"Run {reference_run.pk} is not in this project."})


def _check_input_paths(dataset_versions: Sequence[DatasetVersion]) -> None:
    """Every input file lands at its path in the run's folder: two at one path, a file where
    another needs a folder, or one of the agent's own names would make the run unplaceable."""
    paths: dict[str, str] = {}
    for dataset_version in dataset_versions:
        for path in dataset_version.files.values_list("path", flat=True):
            where = f"{dataset_version.dataset.name}@v{dataset_version.number}"
            if path.split("/", 1)[0] in protocol.RESERVED_RUN_NAMES:
                raise ValidationError({"datasets": f"{where} has {path!r}, a name the run's node keeps for itself."})
            if path in paths:
                raise ValidationError({"datasets": f"{path!r} is in both {paths[path]} and {where}."})
            paths[path] = where
    for path, where in paths.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in paths:
                raise ValidationError({"datasets": f"{where} has {path!r} under a file of the same name."})


def run_submit(
    *,
    project: Project,
    user: User | None,
    notebook_version: NotebookVersion,
    parameters: Any = None,
    dataset_versions: Sequence[DatasetVersion] = (),
    requirements: Any = None,
    priority: int = 0,
    depends_on: Sequence[Run] = (),
    timeout_seconds: int = 3600,
    reference_run: Run | None = None,
    reference_tolerance: dict[str, float] | None = None,
    creator_hidden: bool = False,
    independent: bool = False,
    environment: str = "",
    environment_declaration: Declaration | None = None,
    base_environment: bool = False,
    kind: str = RunKind.NOTEBOOK,
) -> Run:
    """Queue a run. `requirements` is what the submitter sent (see apps/compute/requirements.py).

    Its environment: `environment_declaration` when a caller chose one (a reproduction's), none
    with `base_environment`, else this project's declaration whose lock sha256 the submitter named
    in `environment`, else the notebook version's or the project's (apps.environments.services)."""
    _check_same_project(project, notebook_version, dataset_versions, depends_on, reference_run)
    _check_input_paths(dataset_versions)
    if environment_declaration is None and not base_environment:
        environment_declaration = environment_for_run(
            project=project, notebook_version=notebook_version, sha256=environment
        )
    run = Run(
        kind=kind,
        environment_declaration=environment_declaration,
        environment_lock=environment_declaration.lock if environment_declaration else None,
        project=project,
        notebook_version=notebook_version,
        parameters=validate_parameters(parameters, notebook_version.parameters),
        requirements=clean_requirements(requirements),
        priority=priority,
        timeout_seconds=timeout_seconds,
        max_attempts=settings.REPROLAB_MAX_ATTEMPTS,
        reference_run=reference_run,
        reference_tolerance=reference_tolerance or {},
        creator_hidden=creator_hidden,
        independent=independent,
        created_by=user,
    )
    run.full_clean()
    with transaction.atomic():
        run.save()
        run.input_datasets.set(dataset_versions)
        run.depends_on.set(depends_on)
        append_state_event(run, RunState.QUEUED)
        announce_work()
        broken = [d for d in depends_on if d.state in (RunState.FAILED, RunState.CANCELLED, RunState.LOST)]
        if broken:
            finish(run, RunState.FAILED, f"Dependency run {broken[0].pk} {broken[0].state}.")
    return run


@transaction.atomic
def run_cancel(*, run: Run) -> Run:
    """Cancel at once when queued; when a node holds it, ask the agent (it sees it on heartbeat)."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.state == RunState.QUEUED:
        finish(run, RunState.CANCELLED, "Cancelled before it started.")
    elif run.state in ACTIVE_STATES and not run.cancel_requested:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
        append_server_event(run, protocol.CANCEL_REQUESTED, {})
    return run


def finish(run: Run, state: RunState, error: str = "") -> None:
    """Move a locked run to a final state and settle the runs that depend on it."""
    run.state = state
    run.error = error[:10_000]
    run.finished_at = timezone.now()
    run.lease_id = None
    run.lease_expires_at = None
    run.run_token_hash = ""
    run.pending_output = {}
    run.save()
    append_state_event(run, state, error=run.error)
    # A node slot is free now, and dependents may have become runnable.
    announce_work()
    run_id = run.pk
    transaction.on_commit(lambda: signals.run_finished.send(sender=Run, run_id=run_id, state=state))
    if state != RunState.SUCCEEDED:
        for dependent in Run.objects.select_for_update().filter(depends_on=run, state=RunState.QUEUED):
            finish(dependent, RunState.FAILED, f"Dependency run {run.pk} {state}.")
