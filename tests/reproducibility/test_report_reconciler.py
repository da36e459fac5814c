"""The report reconciler: a run that ended while the broker was down never had its report task
queued; the beat task `build_missing_reports` finds such runs in the database and builds their
reports, in bounded batches, idempotently (and rebuilds one a lost post-reproduction rebuild
left stale)."""

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from apps.compute import services as compute
from apps.compute.models import Run
from apps.reproducibility import tasks
from apps.reproducibility.models import Reproduction, RunReport, Verdict
from tests.factories import make_project, make_user, upload_notebook

from .test_reproductions import executed, finish

LONG_AGO = dt.timedelta(minutes=5)


@pytest.fixture
def lab(db):
    owner = make_user("recon-owner")
    project = make_project(owner, slug="recon-lab")
    version = upload_notebook(project, owner).version
    node = compute.node_register(owner=owner, name="recon-node").node

    def ended_run(*, ago: dt.timedelta = LONG_AGO) -> Run:
        run = compute.run_submit(project=project, user=owner, notebook_version=version)
        finish(run, node, output=executed("1\n"))
        Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - ago)
        return Run.objects.get(pk=run.pk)

    return ended_run


def test_a_run_that_ended_while_the_broker_was_down_gets_its_report_from_the_reconciler(
    lab, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.build_run_report, "delay", broker_down)  # the broker is the edge here
    with django_capture_on_commit_callbacks(execute=True):
        run = lab()  # its run_finished receiver tries to queue the report, and fails
    assert not RunReport.objects.filter(run=run).exists()

    assert tasks.build_missing_reports() == 1

    assert RunReport.objects.get(run=run).data


def test_the_reconciler_is_idempotent(lab):
    runs = [lab(), lab()]

    assert tasks.build_missing_reports() == 2
    built_at = {r.run_id: r.built_at for r in RunReport.objects.all()}
    assert tasks.build_missing_reports() == 0

    assert {r.run_id: r.built_at for r in RunReport.objects.all()} == built_at
    assert set(built_at) == {r.pk for r in runs}


def test_the_reconciler_builds_a_bounded_batch_newest_first(lab, monkeypatch):
    monkeypatch.setattr(tasks, "REPORT_BATCH", 2)
    oldest = lab(ago=dt.timedelta(hours=3))
    newer = [lab(ago=dt.timedelta(hours=2)), lab(ago=dt.timedelta(hours=1))]

    assert tasks.build_missing_reports() == 2
    assert set(RunReport.objects.values_list("run_id", flat=True)) == {r.pk for r in newer}
    assert tasks.build_missing_reports() == 1
    assert RunReport.objects.filter(run=oldest).exists()


def test_the_reconciler_leaves_a_run_that_just_ended_to_its_own_task(lab):
    lab(ago=dt.timedelta(seconds=1))

    assert tasks.build_missing_reports() == 0


def test_the_reconciler_rebuilds_a_report_older_than_a_settled_reproduction(lab):
    run = lab()
    tasks.build_run_report(run.pk)
    RunReport.objects.filter(run=run).update(built_at=timezone.now() - dt.timedelta(minutes=4))
    Reproduction.objects.create(
        original=run, verdict=Verdict.REPRODUCED, finished_at=timezone.now() - dt.timedelta(minutes=3)
    )

    assert tasks.build_missing_reports() == 1
    assert RunReport.objects.get(run=run).built_at > timezone.now() - dt.timedelta(minutes=1)
    assert tasks.build_missing_reports() == 0


def test_beat_runs_the_reconciler():
    tasks_scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert "reproducibility.build_missing_reports" in tasks_scheduled
