"""Environment snapshots and reproduction checks."""

import json
import math
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Run, RunState
from apps.compute.requirements import clean_requirements
from apps.compute.selectors import final_artifacts
from apps.core.queueing import enqueue
from apps.environments import services as environments
from apps.environments.models import EnvironmentLock

from .compare import DIFFERENT, WITHIN, ArtifactFile, Tolerance, compare_artifacts, compare_runs
from .diff import environment_diff, fingerprint
from .models import EnvironmentSnapshot, Reproduction, Verdict
from .signals import reproduction_settled

MAX_REPEATS = 10


def environment_record(*, run: Run, lease_id: str, data: dict[str, Any]) -> EnvironmentSnapshot:
    """Store the snapshot of the run's current attempt (a retried run replaces the earlier one:
    the environment that counts is the one its result came from)."""
    with transaction.atomic():
        run = compute.locked_with_lease(run.pk, lease_id)
        snapshot, _ = EnvironmentSnapshot.objects.update_or_create(
            run=run, defaults={"attempt": run.attempt, "data": data, "fingerprint": fingerprint(data)}
        )
    return snapshot


def reproduction_start(
    *,
    original: Run,
    user: User,
    rtol: float = 1e-9,
    atol: float = 0.0,
    repeats: int = 1,
    requirements: Any = None,
    latest_data: bool = False,
    hide_creator: bool = False,
    independent: bool = False,
    fresh_environment: bool = False,
) -> Reproduction:
    """Rerun the same notebook version with the same parameters and data, `repeats` times.
    With `latest_data`, the reruns take each input dataset's newest version instead: "does the
    result still hold on the current data?" (the input diff then names what changed). The reruns
    need what the original needed, unless `requirements` says otherwise. They run on the
    original's environment lock (or, like it, on the node's base environment); with
    `fresh_environment`, on the lock its declaration resolves to today."""
    if original.state != RunState.SUCCEEDED or not original.output_sha256:
        raise ValidationError(
            {"run": f"Only a succeeded run with an output can be reproduced (this one is {original.state})."}
        )
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValidationError({"repeats": f"repeats must be between 1 and {MAX_REPEATS}."})
    if not (math.isfinite(rtol) and math.isfinite(atol)) or rtol < 0 or atol < 0:
        raise ValidationError({"rtol": "Tolerances are finite numbers, zero or more."})
    requirements = clean_requirements(requirements if requirements is not None else original.requirements)
    declaration = original.environment_declaration
    if fresh_environment:
        if declaration is None:
            raise ValidationError(
                {"fresh_environment": "The original run declared no environment: there is nothing to resolve afresh."}
            )
        declaration = environments.fresh_resolve(declaration)
    with transaction.atomic():
        reproduction = Reproduction.objects.create(
            original=original,
            rtol=rtol,
            atol=atol,
            repeats=repeats,
            requirements=requirements,
            latest_data=latest_data,
            fresh_environment=fresh_environment,
            creator_hidden=hide_creator,
            created_by=user,
        )
        datasets = list(original.input_datasets.select_related("dataset__latest_version"))
        if latest_data:
            datasets = [d.dataset.latest_version or d for d in datasets]
        reruns = [
            compute.run_submit(
                project=original.project,
                user=user,
                notebook_version=original.notebook_version,
                parameters=original.parameters,
                dataset_versions=datasets,
                requirements=requirements,
                priority=original.priority,
                timeout_seconds=original.timeout_seconds,
                # The node compares the arrays it writes against the original's, where they are.
                reference_run=original,
                reference_tolerance={"rtol": rtol, "atol": atol},
                creator_hidden=hide_creator,
                independent=independent,
                environment_declaration=declaration,
                base_environment=declaration is None,
            )
            for _ in range(repeats)
        ]
        reproduction.reruns.set(reruns)
    return reproduction


def _output_notebook(run: Run) -> dict[str, Any]:
    with default_storage.open(run.output_storage_name, "rb") as handle:
        loaded: dict[str, Any] = json.load(handle)
        return loaded


def _artifacts(run: Run) -> dict[str, ArtifactFile]:
    """The artifacts the run ended with, by path. Filesystem storage is read in place
    (memory-mapped for arrays); object storage would need a local copy first."""
    return {
        a.path: ArtifactFile(a.sha256, default_storage.path(a.storage_name), a.comparison) for a in final_artifacts(run)
    }


def reproduction_settle(*, reproduction_id: int) -> Reproduction:
    """Compare once every rerun has ended. Idempotent: a settled reproduction stays as it is."""
    with transaction.atomic():
        reproduction = Reproduction.objects.select_for_update().get(pk=reproduction_id)
        if reproduction.verdict != Verdict.PENDING:
            return reproduction
        reruns = list(reproduction.reruns.select_related("environment_lock").order_by("pk"))
        if any(not r.is_final for r in reruns):
            return reproduction
        original = reproduction.original
        failed = [r for r in reruns if r.state != RunState.SUCCEEDED or not r.output_storage_name]
        report: dict[str, Any]
        if failed:
            report = {"reason": f"Rerun {failed[0].pk} ended {failed[0].state}: {failed[0].error or 'no output'}"}
            reproduction.verdict = Verdict.COULD_NOT_RUN
        else:
            tolerance = Tolerance(rtol=reproduction.rtol, atol=reproduction.atol)
            report = compare_runs(_output_notebook(original), [_output_notebook(r) for r in reruns], tolerance)
            artifacts = compare_artifacts(_artifacts(original), [_artifacts(r) for r in reruns], tolerance)
            if artifacts:
                report["artifacts"] = artifacts
                if any(a["status"] == DIFFERENT for a in artifacts):
                    report["verdict"] = Verdict.NOT_REPRODUCED
                elif any(a["status"] == WITHIN for a in artifacts) and report["verdict"] == Verdict.REPRODUCED:
                    report["verdict"] = Verdict.WITHIN_TOLERANCE
            reproduction.verdict = report.pop("verdict")
        environments = {s.run_id: s.data for s in EnvironmentSnapshot.objects.filter(run__in=[original, *reruns])}
        if original.pk in environments and reruns and reruns[0].pk in environments:
            report["environment"] = environment_diff(environments[original.pk], environments[reruns[0].pk])
            changed_inputs = report["environment"]["inputs"]
            if any(changed_inputs[k] for k in ("added", "removed", "changed")):
                # Name the changed inputs next to the verdict: they are the first suspect.
                report["changed_inputs"] = changed_inputs
        if reruns:
            report["environment_lock"] = compare_locks(original.environment_lock, reruns[0].environment_lock)
            if report["environment_lock"]["changed_packages"]:
                report["changed_packages"] = report["environment_lock"]["changed_packages"]  # beside the verdict
        reproduction.report = report
        reproduction.finished_at = timezone.now()
        reproduction.save(update_fields=["verdict", "report", "finished_at"])
        reproduction_settled.send(sender=Reproduction, reproduction=reproduction)
        original_id = original.pk
        transaction.on_commit(lambda: queue_report(original_id))  # its checklist names the verdict
    return reproduction


def compare_locks(original: EnvironmentLock | None, rerun: EnvironmentLock | None) -> dict[str, Any]:
    """Which declared environment each side ran on, and the packages that differ between the two
    locks (a fresh resolve's drift); a layered lock also depends on its node's base packages."""
    pins = [{p["name"]: p["version"] for p in (lock.packages if lock else [])} for lock in (original, rerun)]
    changed = [
        f"{name}: {pins[0].get(name, 'absent')} -> {pins[1].get(name, 'absent')}"
        for name in sorted(set(pins[0]) | set(pins[1]))
        if pins[0].get(name) != pins[1].get(name)
    ]
    notes = []
    if original is None:
        notes.append("The original declared no environment: both ran on their node's base environment.")
    if any(lock is not None and lock.layered for lock in (original, rerun)):
        notes.append("The environment is layered: the runs also depend on their nodes' base packages.")
    return {
        "original": original.sha256 if original else None,
        "rerun": rerun.sha256 if rerun else None,
        "same": getattr(original, "pk", None) == getattr(rerun, "pk", None),
        "changed_packages": changed,
        "notes": notes,
    }


def pending_reproductions_for(run_id: int) -> list[int]:
    return list(Reproduction.objects.filter(reruns=run_id, verdict=Verdict.PENDING).values_list("pk", flat=True))


def queue_report(run_id: int) -> None:
    """Queue the run's report; a broker outage is logged once and the beat reconciler
    (build_missing_reports) builds it later."""
    from .tasks import build_run_report

    enqueue(build_run_report, run_id)
