"""Reproductions and declared environments: reruns take the original's lock (or, like it, the
base environment, even once the project declares one); a fresh resolve names the packages that
drifted."""

import hashlib

import pytest
from django.core.exceptions import ValidationError

from apps.accounts.models import User
from apps.compute.models import Run
from apps.environments.models import Declaration, EnvironmentLock
from apps.environments.services import set_project_environment
from apps.reproducibility.services import compare_locks, reproduction_start

from .test_environment_lock_fair import finished_run, make_lock


def owner_of(run: Run) -> User:
    assert run.created_by is not None
    return run.created_by


def other_lock(version: str) -> EnvironmentLock:
    text = f"# ReproLab environment lock\ntabulate=={version}\n"
    return EnvironmentLock.objects.create(
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        lock=text,
        packages=[{"name": "tabulate", "version": version}, {"name": "wcwidth", "version": "0.2"}],
        python_version="3.11",
        platform="linux",
        resolver="uv test",
    )


def declared(lock: EnvironmentLock) -> Declaration:
    return Declaration.objects.create(lock=lock, kind="requirements", name="requirements.txt", text="tabulate\n")


def test_reruns_take_the_originals_lock(db):
    lock = make_lock()
    original = finished_run("locked", lock)
    set_project_environment(project=original.project, declaration=declared(other_lock("0.10.0")))  # declared since
    reproduction = reproduction_start(original=original, user=owner_of(original), repeats=2)
    assert {r.environment_lock_id for r in reproduction.reruns.all()} == {lock.pk}


def test_a_base_environment_run_is_rerun_on_the_base_even_once_the_project_declares_one(db):
    original = finished_run("bare", None)
    set_project_environment(project=original.project, declaration=declared(other_lock("0.10.0")))
    reproduction = reproduction_start(original=original, user=owner_of(original))
    assert reproduction.reruns.get().environment_lock is None
    with pytest.raises(ValidationError, match="declared no environment"):
        reproduction_start(original=original, user=owner_of(original), fresh_environment=True)


def test_compare_locks_names_the_drift():
    same = compare_locks(None, None)
    assert same["same"] is True
    assert same["changed_packages"] == []


def test_compare_locks_between_a_lock_and_its_fresh_resolve(db):
    old, new = make_lock(), other_lock("0.10.0")
    drift = compare_locks(old, new)
    assert drift["same"] is False
    assert drift["changed_packages"] == ["tabulate: 0.9.0 -> 0.10.0", "wcwidth: absent -> 0.2"]
    layered = make_lock(text="# layered\ntabulate==0.9.0\n", layered=True)
    assert any("layered" in note for note in compare_locks(layered, layered)["notes"])
