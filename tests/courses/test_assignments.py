"""Assignments in nbgrader's format: sources validated with a 400 that names the cell and the
problem; the student version generated as `nbgrader generate_assignment` does (compared with
nbgrader itself, cell by cell); released to students, who never see solutions or hidden tests."""

import copy
import io
import json
import zipfile
from pathlib import Path

import nbformat
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.courses.assignments import _student_json
from apps.courses.models import CourseRole
from apps.courses.nbgrader_format import student_version
from apps.courses.services import course_create, member_set
from tests.factories import make_user

from .nbgrader_env import generate_assignment
from .sources import graded, problem_set, second_notebook

URL = "/api/v1/courses/{}/assignments/"


@pytest.fixture
def people(db):
    return {name: make_user(name) for name in ("ines", "tariq", "stella", "olga")}


@pytest.fixture
def course(people):
    course = course_create(creator=people["ines"], slug="py-101", title="Python 101")
    member_set(course=course, username="tariq", role=CourseRole.TA)
    member_set(course=course, username="stella", role=CourseRole.STUDENT)
    return course


def notebook_upload(name: str, nb) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, nbformat.writes(nb).encode(), content_type="application/x-ipynb+json")


def create(client, slug: str, *files, name: str = "ps1", **fields):
    return client.post(URL.format(slug), {"name": name, "files": list(files), **fields}, format="multipart")


def comparable(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    source = cell.get("source", "")
    cell["source"] = "".join(source) if isinstance(source, list) else source
    return cell


def test_the_student_version_is_nbgrader_generate_assignments(tmp_path: Path):
    sources = {"problem1.ipynb": problem_set(), "problem2.ipynb": second_notebook()}
    folder = tmp_path / "course" / "source" / "ps1"
    folder.mkdir(parents=True)
    for name, nb in sources.items():
        nbformat.write(nb, folder / name)
    released = generate_assignment(tmp_path / "course", "ps1")
    for name, nb in sources.items():
        theirs = json.loads((released / name).read_text())
        ours = student_version(json.loads(nbformat.writes(nb)))
        assert len(ours["cells"]) == len(theirs["cells"])
        for index, (mine, reference) in enumerate(zip(ours["cells"], theirs["cells"], strict=True)):
            assert comparable(mine) == comparable(reference), f"{name} cell {index + 1}"
        assert ours["metadata"] == theirs["metadata"]
        assert _student_json(ours, name) == (released / name).read_bytes()  # the very file nbgrader writes


def test_an_assignment_is_uploaded_released_and_downloaded_without_solutions(client_for, people, course):
    instructor, student = client_for(people["ines"]), client_for(people["stella"])
    data = SimpleUploadedFile("data.csv", b"x,y\n1,2\n")
    made = create(
        instructor,
        course.slug,
        notebook_upload("problem1.ipynb", problem_set()),
        data,
        due_at="2027-01-15T17:00:00Z",
        late_policy="percent_per_day",
        late_percent_per_day="10",
        late_cap_percent="50",
        max_submissions="3",
        results_visibility="after_due",
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["late_policy"] == "percent_per_day"
    assert body["max_submissions"] == 3
    notebook = next(f for f in body["files"] if f["is_notebook"])
    assert notebook["points"] == 7.5  # 2 + 3 + 1 + 1.5
    assert {c["grade_id"]: c["kind"] for c in notebook["graded_cells"]}["explain"] == "manual"

    base = URL.format(course.slug) + "ps1/"
    assert student.get(base).status_code == 404  # not released yet
    assert student.get(f"{base}release/").status_code == 404
    assert student.get(URL.format(course.slug)).json()["results"] == []
    assert client_for(people["tariq"]).get(f"{base}release/").status_code == 200  # staff preview
    assert client_for(people["tariq"]).post(f"{base}release/").status_code == 403
    assert instructor.post(f"{base}release/").status_code == 200

    archive = zipfile.ZipFile(io.BytesIO(b"".join(student.get(f"{base}release/").streaming_content)))
    assert sorted(archive.namelist()) == ["ps1/data.csv", "ps1/problem1.ipynb"]
    released = archive.read("ps1/problem1.ipynb").decode()
    for secret in ("return x * x", "# hidden", "Because squares", "Mentions the axes", "answer = 42"):
        assert secret not in released
    assert "raise NotImplementedError()" in released
    one = student.get(f"{base}release/?notebook=problem1.ipynb")
    assert one.status_code == 200
    assert b"".join(one.streaming_content).decode() == released
    assert student.get(f"{base}release/?notebook=data.csv").status_code == 404
    assert client_for(people["olga"]).get(f"{base}release/").status_code == 404  # an outsider
    assert create(student, course.slug, notebook_upload("x.ipynb", problem_set()), name="mine").status_code == 403


def _with(change) -> nbformat.NotebookNode:
    nb = problem_set()
    change(nb.cells)
    return nb


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda cells: cells[3].metadata["nbgrader"].update(grade_id="square"), "cell 4 (square): duplicate grade_id"),
        (lambda cells: cells[1].metadata["nbgrader"].update(grade_id=""), "cell 2: empty or missing grade_id"),
        (lambda cells: cells[2].metadata["nbgrader"].pop("points"), "cell 3 (test_square): a grade cell needs points"),
        (lambda cells: cells[2].metadata["nbgrader"].update(schema_version=2), "unknown nbgrader schema version 2"),
        (
            lambda cells: cells.append(nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")),
            "cell 9: solution markers in a cell that is not a solution cell",
        ),
        (
            lambda cells: cells.append(
                nbformat.v4.new_code_cell("### BEGIN HIDDEN TESTS\nassert 1\n### END HIDDEN TESTS")
            ),
            "cell 9: hidden-test markers in a cell that is not a grade cell",
        ),
        (
            lambda cells: cells.append(graded(nbformat.v4.new_code_cell("x"), task=True, grade_id="t9", points=1)),
            "a task cell must be markdown",
        ),
        (
            lambda cells: cells[1].update(source="### BEGIN SOLUTION\nx = 1\n"),
            "cell 2 (square): a '### BEGIN SOLUTION' region is nested or never ended",
        ),
        (lambda cells: cells[2].metadata["nbgrader"].update(grade_id="bad id!"), "letters, digits"),
        (
            lambda cells: cells[2].update(
                source="assert 1\n=== BEGIN MARK SCHEME ===\nrubric\n=== END MARK SCHEME ==="
            ),
            "cell 3 (test_square): mark-scheme markers in a cell that is not a task cell",
        ),
        (lambda cells: cells[1].metadata["nbgrader"].update(extra=1), "cell 2 (square): unknown nbgrader metadata key"),
        (
            lambda cells: cells.append(graded(nbformat.v4.new_markdown_cell("x"), grade=True, grade_id="m", points=1)),
            "cell 9 (m): a markdown answer must be both a grade and a solution cell",
        ),
    ],
)
def test_invalid_sources_are_a_400_naming_the_cell(client_for, people, course, change, message):
    response = create(client_for(people["ines"]), course.slug, notebook_upload("problem1.ipynb", _with(change)))
    assert response.status_code == 400, response.content
    assert "problem1.ipynb: " in str(response.json())
    assert message in str(response.json())
    assert not course.assignments.exists()


def test_other_bad_uploads_are_400s(client_for, people, course):
    client = client_for(people["ines"])
    assert create(client, course.slug, SimpleUploadedFile("data.csv", b"1")).status_code == 400  # no notebook
    assert create(client, course.slug, SimpleUploadedFile("p.ipynb", b"{not json")).status_code == 400
    plain = nbformat.v4.new_notebook()
    plain.cells = [nbformat.v4.new_code_cell("1")]
    no_points = create(client, course.slug, notebook_upload("p.ipynb", plain))
    assert "no graded cell" in str(no_points.json())
    good = notebook_upload("problem1.ipynb", problem_set())
    assert create(client, course.slug, good).status_code == 201
    again = create(client, course.slug, notebook_upload("problem1.ipynb", problem_set()))
    assert again.status_code == 400
    assert "already" in str(again.json())


def test_odd_sources_are_400s_not_500s(client_for, people, course):
    client = client_for(people["ines"])
    listed = problem_set()
    listed.metadata["kernelspec"]["language"] = ["python"]
    assert create(client, course.slug, notebook_upload("p.ipynb", listed)).status_code == 400
    surrogate = nbformat.writes(problem_set()).replace("Read carefully.", "Read \\ud800 carefully.")
    response = create(client, course.slug, SimpleUploadedFile("p.ipynb", surrogate.encode()))
    assert response.status_code == 400
    assert client.post("/api/v1/courses/", {"slug": "join", "title": "x"}, format="json").status_code == 400
    base = URL.format(course.slug)
    assert create(client, course.slug, notebook_upload("problem1.ipynb", problem_set())).status_code == 201
    assert client.get(f"{base}ps1/release/?notebook=a%00b").status_code == 404
    assert client.delete(f"/api/v1/courses/{course.slug}/members/a%00b/").status_code == 400
    early = create(
        client, course.slug, notebook_upload("p.ipynb", problem_set()), name="ps9", due_at="0001-01-01T00:00:00Z"
    )
    assert early.status_code == 400
