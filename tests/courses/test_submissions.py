"""Submissions: immutable, timed by the server, late penalties by policy and extension, bounded
in number; a student sees only their own."""

import datetime as dt
import io

import nbformat
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.courses.assignments import Incoming, assignment_create, assignment_release
from apps.courses.models import Assignment, CourseRole, LatePolicy, Submission
from apps.courses.services import course_create, member_set
from apps.courses.submissions import lateness
from tests.factories import make_user

from .sources import problem_set

BASE = "/api/v1/courses/py-101/assignments/ps1/"


@pytest.fixture
def people(db):
    return {name: make_user(name) for name in ("ines", "tariq", "stella", "sven", "olga")}


def make_assignment(people, **options):
    course = course_create(creator=people["ines"], slug="py-101", title="Python 101")
    member_set(course=course, username="tariq", role=CourseRole.TA)
    for student in ("stella", "sven"):
        member_set(course=course, username=student, role=CourseRole.STUDENT)
    source = nbformat.writes(problem_set()).encode()
    return assignment_create(
        course=course,
        creator=people["ines"],
        name="ps1",
        files=[Incoming("problem1.ipynb", io.BytesIO(source))],
        **options,
    )


def submission_file(name: str = "problem1.ipynb", text: str = "answer = 42") -> SimpleUploadedFile:
    nb = problem_set()
    nb.cells[3].source = text
    return SimpleUploadedFile(name, nbformat.writes(nb).encode())


def submit(client, *files):
    return client.post(f"{BASE}submissions/", {"files": list(files) or [submission_file()]}, format="multipart")


def test_a_student_submits_and_sees_only_their_own(client_for, people):
    assignment = make_assignment(people)
    stella, sven = client_for(people["stella"]), client_for(people["sven"])
    assert submit(stella).status_code == 404  # not released
    assignment_release(assignment=assignment)
    first = submit(stella)
    assert first.status_code == 201, first.content
    body = first.json()
    assert body["number"] == 1
    assert body["state"] == "received"
    assert body["late_penalty_percent"] == 0
    assert body["files"][0]["path"] == "problem1.ipynb"
    assert submit(stella).json()["number"] == 2
    assert submit(sven).json()["number"] == 1
    assert [s["student"] for s in stella.get(f"{BASE}submissions/").json()["results"]] == ["stella", "stella"]
    theirs = Submission.objects.get(student=people["sven"]).pk
    assert stella.get(f"{BASE}submissions/{theirs}/").status_code == 404
    assert client_for(people["tariq"]).get(f"{BASE}submissions/{theirs}/").status_code == 200
    assert len(client_for(people["tariq"]).get(f"{BASE}submissions/").json()["results"]) == 3
    assert client_for(people["olga"]).get(f"{BASE}submissions/").status_code == 404
    assert submit(client_for(people["tariq"])).status_code == 403  # staff do not submit


def test_only_the_assignments_notebooks_are_taken(client_for, people):
    assignment_release(assignment=make_assignment(people))
    stella = client_for(people["stella"])
    other = submit(stella, submission_file("other.ipynb"))
    assert other.status_code == 400
    assert "not a notebook of this assignment" in str(other.json())
    broken = submit(stella, SimpleUploadedFile("problem1.ipynb", b"{"))
    assert broken.status_code == 400
    assert "problem1.ipynb" in str(broken.json())
    assert not Submission.objects.exists()


def test_the_maximum_number_of_submissions_holds(client_for, people):
    assignment_release(assignment=make_assignment(people, max_submissions=2))
    stella = client_for(people["stella"])
    assert [submit(stella).status_code for _ in range(3)] == [201, 201, 400]
    assert "all 2 submissions" in str(submit(stella).json())


def test_late_penalties_by_policy_grace_and_extension(client_for, people):
    due = timezone.now() - dt.timedelta(days=2, hours=1)
    assignment = make_assignment(
        people, due_at=due, late_policy=LatePolicy.PERCENT_PER_DAY, late_percent_per_day=10, late_cap_percent=25
    )
    assignment_release(assignment=assignment)
    late = submit(client_for(people["stella"])).json()
    assert late["late_penalty_percent"] == 25  # 3 days started, 30 %, capped at 25 %
    assert late["late_seconds"] > 2 * 24 * 3600
    granted = client_for(people["ines"]).post(
        f"{BASE}extensions/",
        {"username": "sven", "due_at": (timezone.now() + dt.timedelta(days=1)).isoformat()},
        format="json",
    )
    assert granted.status_code == 200
    on_time = submit(client_for(people["sven"])).json()
    assert on_time["late_penalty_percent"] == 0
    assert (
        client_for(people["tariq"])
        .post(f"{BASE}extensions/", {"username": "sven", "due_at": due.isoformat()}, format="json")
        .status_code
        == 403
    )
    not_student = client_for(people["ines"]).post(
        f"{BASE}extensions/", {"username": "tariq", "due_at": due.isoformat()}, format="json"
    )
    assert not_student.status_code == 400


@pytest.mark.parametrize(
    ("policy", "grace", "late_by", "expected"),
    [
        (LatePolicy.NONE, 0, dt.timedelta(days=5), (5 * 86400, 0.0)),
        (LatePolicy.ZERO, 0, dt.timedelta(seconds=1), (1, 100.0)),
        (LatePolicy.ZERO, 10, dt.timedelta(minutes=9), (0, 0.0)),  # within the grace period
        (LatePolicy.PERCENT_PER_DAY, 0, dt.timedelta(hours=1), (3600, 5.0)),  # a day started
        (LatePolicy.PERCENT_PER_DAY, 0, dt.timedelta(days=1, seconds=1), (86401, 10.0)),
        (LatePolicy.PERCENT_PER_DAY, 0, -dt.timedelta(seconds=1), (0, 0.0)),  # early
    ],
)
def test_lateness(policy, grace, late_by, expected):
    assignment = Assignment(late_policy=policy, late_percent_per_day=5, late_cap_percent=50, grace_minutes=grace)
    due = timezone.now()
    assert lateness(assignment, due, due + late_by) == expected
    assert lateness(assignment, None, due + late_by) == (0, 0.0)
