"""A run's declared environment in its FAIR outputs: the RO-Crate carries the lock the node built
the run from (and the declaration it was resolved from), the report says the run was locked and
stops advising to pin, and a run that declared nothing is said to have used its node's base
environment, with the advice to declare one. The environment page says which of the two it was."""

import copy
import hashlib
import html
import io
import json
import zipfile
from typing import Any

from apps.compute import services as compute
from apps.compute.models import Run
from apps.environments.models import Declaration, EnvironmentLock
from apps.reproducibility import tasks
from apps.reproducibility.models import RunReport
from apps.reproducibility.services import environment_record
from tests.factories import make_project, make_user, upload_notebook

from .test_crate import validated_crate
from .test_environment import SNAPSHOT
from .test_reproductions import executed

LOCK = (
    "# ReproLab environment lock: Python 3.11, platform linux, closed\n"
    "# Resolved by uv test from requirements.txt\n"
    "tabulate==0.9.0 \\\n"
    "    --hash=sha256:0095b12bf5966de529c0feb1fa08671671b3368eec77d7ef7ab114be2c068b3c\n"
)
LOCK_PATH = "environment/requirements.lock.txt"
# The notebook installs a package its lock already pins: nothing escapes the lock.
SOURCE = "!pip install tabulate\nimport tabulate\nprint(tabulate.tabulate([[1]]))"


def make_lock(*, text: str = LOCK, layered: bool = False) -> EnvironmentLock:
    return EnvironmentLock.objects.create(
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        lock=text,
        packages=[{"name": "tabulate", "version": "0.9.0"}],
        python_version="3.11",
        platform="linux",
        layered=layered,
        resolver="uv test",
    )


def declared_snapshot(lock: EnvironmentLock | None, **described: Any) -> dict[str, Any]:
    """The snapshot an agent sends: for a declared environment, its packages and the
    `environment` part (reprolab_agent.envs.describe_environment) without them."""
    data = copy.deepcopy(SNAPSHOT)
    if lock is None:
        data["environment"] = {"declared": False}
        return data
    data["packages"] = {"tabulate": "0.9.0", "papermill": "2.7.0"}
    data["environment"] = {
        "declared": True,
        "sha256": lock.sha256,
        "layered": lock.layered,
        "matches_lock": True,
        "differences": [],
        **described,
    }
    return data


def finished_run(slug: str, lock: EnvironmentLock | None, source: str = SOURCE, **described: Any) -> Run:
    """A succeeded run of a notebook, built from `lock` (None: the node's base environment), with
    the snapshot its node recorded, as an agent that builds environments leaves it."""
    owner = make_user(f"{slug}-owner")
    project = make_project(owner, slug=slug)
    project.license = "MIT"
    project.save()
    version = upload_notebook(project, owner, source=source).version
    declaration = (
        Declaration.objects.create(lock=lock, kind="requirements", name="requirements.txt", text="tabulate\n")
        if lock is not None
        else None
    )
    run = compute.run_submit(
        project=project,
        user=owner,
        notebook_version=version,
        environment_declaration=declaration,
        base_environment=lock is None,
    )
    node = compute.node_register(owner=owner, name=f"{slug}-node").node
    compute.node_seen(node=node, capabilities={"environments": True, "python_version": "3.11.7"})
    claim = compute.run_claim(node=node)
    assert claim is not None
    assert claim.run.pk == run.pk
    environment_record(run=run, lease_id=claim.lease_id, data=declared_snapshot(lock, **described))
    output = executed("+-+\n|1|\n+-+\n")
    compute.run_output_upload(
        run=run, lease_id=claim.lease_id, stream=io.BytesIO(output), sha256=hashlib.sha256(output).hexdigest()
    )
    compute.run_complete(run=run, lease_id=claim.lease_id, state="succeeded")
    run.refresh_from_db()
    return run


def crate_of(client_for, run: Run, tmp_path) -> tuple[dict[str, Any], zipfile.ZipFile]:
    archive = zipfile.ZipFile(validated_crate(client_for(run.created_by), run, tmp_path))
    metadata = json.loads(archive.read("ro-crate-metadata.json"))
    return {entity["@id"]: entity for entity in metadata["@graph"]}, archive


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def page_part(client, url: str, *, end: str) -> str:
    """The part of a page with id="declared-environment", its entities unescaped."""
    page = client.get(url).content.decode()
    return html.unescape(page.split('id="declared-environment">', 1)[1].split(end, 1)[0])


def report_of(run: Run) -> dict[str, Any]:
    assert tasks.build_run_report(run.pk) is True
    return RunReport.objects.get(run=run).data


def test_crate_holds_the_lock_as_an_input_of_the_run_and_its_declaration(db, client_for, tmp_path):
    lock = make_lock()
    run = finished_run("locked-crate", lock)

    graph, archive = crate_of(client_for, run, tmp_path)

    with archive:
        assert archive.read(LOCK_PATH) == LOCK.encode()
        assert archive.read("environment/requirements.txt") == b"tabulate\n"
    entry = graph[LOCK_PATH]
    assert entry["@type"] == "File"
    assert entry["encodingFormat"] == "text/plain"
    assert entry["sha256"] == lock.sha256 == hashlib.sha256(LOCK.encode()).hexdigest()
    assert entry["contentSize"] == str(len(LOCK.encode()))
    assert lock.sha256 in entry["description"]
    assert "Python 3.11" in entry["description"]
    assert "closed environment" in entry["description"]
    assert entry["isBasedOn"] == {"@id": "environment/requirements.txt"}
    assert graph["environment/requirements.txt"]["sha256"] == hashlib.sha256(b"tabulate\n").hexdigest()
    action = graph[f"#run-{run.pk}"]
    assert {"@id": LOCK_PATH} in as_list(action["object"])
    assert action["instrument"] == {"@id": "https://github.com/nteract/papermill"}  # the tool, still
    assert {"@id": LOCK_PATH} in as_list(graph["./"]["hasPart"])


def test_a_layered_lock_says_in_the_crate_that_the_run_depends_on_the_base(db, client_for, tmp_path):
    run = finished_run("layered-crate", make_lock(layered=True), base_packages={"numpy": "2.1.0"})

    graph, archive = crate_of(client_for, run, tmp_path)
    archive.close()

    assert "layered over the node's base packages" in graph[LOCK_PATH]["description"]


def test_a_base_environment_run_has_no_lock_in_its_crate(db, client_for, tmp_path):
    run = finished_run("base-crate", None)

    graph, archive = crate_of(client_for, run, tmp_path)
    with archive:
        names = archive.namelist()

    assert not [name for name in names if name.startswith("environment/")]
    assert not [key for key in graph if key.startswith("environment/")]
    assert "environment.json" in names  # the snapshot, as before


def test_report_of_a_locked_run_says_locked_and_does_not_advise_pinning(db):
    lock = make_lock()
    run = finished_run("locked-report", lock)

    report = report_of(run)

    recommendations = " ".join(report["recommendations"])
    assert "Pin the packages" not in recommendations
    assert "nothing declared" not in recommendations
    assert "/environment/" not in recommendations
    environment = report["environment"]
    assert environment["declared"] is True
    assert environment["lock"]["sha256"] == lock.sha256
    assert environment["lock"]["packages"] == 1
    assert environment["lock"]["matches_lock"] is True
    assert "matched the lock exactly" in environment["statement"]
    check = next(c for c in report["checklist"] if c["item"] == "Locked environment")
    assert check["ok"] is True
    assert lock.sha256 in check["detail"]
    assert "1 packages" in check["detail"]
    assert "matched the lock exactly" in check["detail"]
    # The earlier keys are all still there.
    assert {"python", "os", "cpu", "gpus", "packages", "fingerprint"} <= set(environment)


def test_report_names_what_a_locked_run_still_lets_escape(db):
    """Packages the notebook installs that the lock lacks, an installation that differed from the
    lock, and a layered lock's dependence on the node's base packages."""
    run = finished_run(
        "leaky-report",
        make_lock(layered=True),
        source="!pip install tabulate rich\nprint(1)",
        matches_lock=False,
        differences=["tabulate: locked 0.9.0, installed 0.8.10"],
        base_packages={"numpy": "2.1.0", "pandas": "2.2.0"},
    )

    report = report_of(run)

    recommendations = " ".join(report["recommendations"])
    assert "Pin the packages" not in recommendations
    assert "lacks (rich)" in recommendations
    assert "tabulate: locked 0.9.0, installed 0.8.10" in recommendations
    assert "layered over node leaky-report-node's base packages" in recommendations
    statement = report["environment"]["statement"]
    assert "did not match the lock" in statement
    assert "the run depends on what node leaky-report-node had installed too (2 base packages recorded)" in statement
    check = next(c for c in report["checklist"] if c["item"] == "Locked environment")
    assert check["ok"] is False


def test_report_of_a_base_environment_run_says_so_and_advises_declaring(db):
    run = finished_run("base-report", None)

    report = report_of(run)

    environment = report["environment"]
    assert environment["declared"] is False
    assert environment["lock"] is None
    assert "node's base environment (nothing declared)" in environment["statement"]
    recommendations = " ".join(report["recommendations"])
    assert "Pin the packages the notebook installs (tabulate)" in recommendations
    assert "/api/v1/projects/base-report/environment/" in recommendations
    assert "requirements.txt beside the notebook" in recommendations
    check = next(c for c in report["checklist"] if c["item"] == "Locked environment")
    assert check["ok"] is False


def test_report_page_shows_the_lock_or_the_base_environment(client, db):
    lock = make_lock()
    locked = finished_run("locked-page", lock)
    base = finished_run("base-page", None)
    for run in (locked, base):
        tasks.build_run_report(run.pk)

    client.force_login(locked.created_by)
    part = page_part(client, f"/runs/{locked.pk}/report/", end="</dd>")
    assert "locked" in part
    assert lock.sha256[:12] in part
    assert "installed exactly as locked" in part

    client.force_login(base.created_by)
    part = page_part(client, f"/runs/{base.pk}/report/", end="</dd>")
    assert "node's base environment (nothing declared)" in part


def test_environment_page_shows_the_declared_environment_or_the_base(client, db):
    lock = make_lock(layered=True)
    locked = finished_run(
        "locked-env-page",
        lock,
        matches_lock=False,
        differences=["tabulate: locked 0.9.0, installed 0.8.10"],
        base_packages={"numpy": "2.1.0", "pandas": "2.2.0", "scipy": "1.14.0"},
    )
    base = finished_run("base-env-page", None)

    client.force_login(locked.created_by)
    part = page_part(client, f"/runs/{locked.pk}/environment/", end="</section>")
    assert lock.sha256[:12] in part
    assert "no</span>" in part  # does not match the lock
    assert "tabulate: locked 0.9.0, installed 0.8.10" in part
    assert "over the node's base packages (3)" in part

    client.force_login(base.created_by)
    part = page_part(client, f"/runs/{base.pk}/environment/", end="</section>")
    assert "node's base environment (nothing declared)" in part
