"""The human run report: built by the Celery task when a run ends, with a FAIR checklist and
recommendations drawn from the notebook, its data and its environment; printable and escaped."""

import datetime as dt
import io

import pytest

from apps.compute import services as compute
from apps.compute.models import Run
from apps.projects import services as project_services
from apps.projects.models import Role
from apps.reproducibility import tasks
from apps.reproducibility.models import RunReport
from config.celery import app as celery_app
from tests.factories import make_project, make_user, upload_notebook

from .test_reproductions import executed, finish

RISKY = "!pip install pandas numpy==2.1.0\nimport random\nprint(random.random())"


@pytest.fixture
def eager_celery():
    """Run tasks in-process, so a finished run's report is built through the real receiver."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def risky_run(db):
    owner = make_user("rep-owner")
    project = make_project(owner, slug="report-lab", members={make_user("rep-viewer"): Role.VIEWER})
    dataset = project_services.dataset_create(project=project, name="raw", creator=owner)
    data_version, _ = project_services.dataset_add_files(
        dataset=dataset,
        files=[project_services.IncomingFile("table.xlsx", io.BytesIO(b"binary"))],
        uploader=owner,
    )
    version = upload_notebook(project, owner, "risky <b>nb</b>.ipynb", source=RISKY).version
    run = compute.run_submit(
        project=project,
        user=owner,
        notebook_version=version,
        dataset_versions=[data_version],
        parameters={"alpha": 0.5},
    )
    node = compute.node_register(owner=owner, name="rep-node").node
    return owner, run, node


def test_report_recommends_seeds_pins_a_license_and_open_formats(risky_run):
    _, run, node = risky_run
    finish(run, node, output=executed("0.42\n"))
    assert tasks.build_run_report(run.pk) is True
    report = RunReport.objects.get(run=run).data
    recommendations = " ".join(report["recommendations"])
    assert "Pin the packages" in recommendations
    assert "pandas" in recommendations
    assert "numpy" not in recommendations.split("(")[1].split(")")[0]  # numpy==2.1.0 is pinned
    assert "without setting a seed" in recommendations
    assert "data has no license" in recommendations
    assert "table.xlsx" in recommendations
    checklist = {c["item"]: c["ok"] for c in report["checklist"]}
    assert checklist["License"] is False
    assert checklist["Open formats"] is False
    assert checklist["Persistent identifier"] is False


def test_a_finished_run_gets_its_report_from_the_task(risky_run, eager_celery, django_capture_on_commit_callbacks):
    _, run, node = risky_run
    with django_capture_on_commit_callbacks(execute=True):
        finish(run, node, output=executed("0.42\n"))
    assert RunReport.objects.filter(run=run).exists()


def test_report_page_is_printable_escaped_and_private(client, risky_run):
    owner, run, node = risky_run
    client.force_login(owner)
    assert client.get(f"/runs/{run.pk}/report/").status_code == 202  # not ended: nothing yet
    finish(run, node, output=executed("0.42\n"))
    tasks.build_run_report(run.pk)
    page = client.get(f"/runs/{run.pk}/report/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "FAIR self-assessment" in html
    assert "risky &lt;b&gt;nb&lt;/b&gt;.ipynb" in html
    assert "<b>nb</b>" not in html
    assert "@media print" not in html  # the print rules live in the stylesheet
    client.force_login(make_user())
    assert client.get(f"/runs/{run.pk}/report/").status_code == 404


def test_report_page_formats_times_like_the_site_and_says_how_long_it_took(client, risky_run):
    owner, run, node = risky_run
    finish(run, node, output=executed("0.42\n"))
    started = dt.datetime(2026, 12, 1, 8, 30, 19, 450296, tzinfo=dt.UTC)
    Run.objects.filter(pk=run.pk).update(started_at=started, finished_at=started + dt.timedelta(seconds=3))
    tasks.build_run_report(run.pk)
    client.force_login(owner)

    page = client.get(f"/runs/{run.pk}/report/").content.decode()

    times = page.split('id="report-times">', 1)[1].split("</p>", 1)[0]
    assert "started 2026-12-01 08:30:19 UTC" in times
    assert "finished 2026-12-01 08:30:22 UTC" in times
    assert "took 3 seconds" in times
    assert "T08:30" not in page
    assert "+00:00" not in page


def test_fair_identifier_says_what_is_true_and_promises_no_doi(risky_run):
    _, run, node = risky_run
    finish(run, node, output=executed("0.42\n"))
    tasks.build_run_report(run.pk)

    identifier = next(
        c for c in RunReport.objects.get(run=run).data["checklist"] if c["item"] == "Persistent identifier"
    )

    assert identifier["ok"] is False
    assert "mint" not in identifier["detail"]
    assert "URL" in identifier["detail"]
    assert "sha256" in identifier["detail"]
    assert "DataCite registration" in identifier["detail"]
