"""Grading on the site's side, with the node's part played by its report: queueing a submission's
grading runs in the course's grading project (and who may take them), recording what a node
observed as cell grades, results visibility, and the gradebook (JSON and nbgrader's CSV)."""

import csv
import datetime as dt
import io
import json

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.compute import services as compute
from apps.compute.models import Run, RunArtifact, RunState
from apps.compute.services.claims import run_claim
from apps.core.hashing import store_blob
from apps.courses.assignments import Incoming, assignment_create, assignment_release
from apps.courses.grading import reconcile, record_grading
from apps.courses.models import CellGrade, CourseRole, RegradeRequest, ResultsVisibility, Submission
from apps.courses.nbgrader_format import student_version
from apps.courses.services import course_create, member_remove, member_set
from apps.projects.models import Membership
from tests.factories import make_user

from . import grading_sources as sources

BASE = "/api/v1/courses/cs1/"


@pytest.fixture
def course(db):
    people = {
        name: make_user(name, staff=name == "root") for name in ("ines", "tariq", "stella", "sven", "olga", "root")
    }
    course = course_create(creator=people["ines"], slug="cs1", title="CS 1")
    member_set(course=course, username="tariq", role=CourseRole.TA)
    for student in ("stella", "sven"):
        member_set(course=course, username=student, role=CourseRole.STUDENT)
    source = json.dumps(sources.three_questions()).encode()
    assignment = assignment_create(
        course=course,
        creator=people["ines"],
        name="ps1",
        files=[Incoming("ps1.ipynb", io.BytesIO(source)), Incoming("data.csv", io.BytesIO(sources.DATA.encode()))],
        late_policy="percent_per_day",
        late_percent_per_day=10,
    )
    assignment_release(assignment=assignment)
    course.refresh_from_db()
    return course, assignment, people


def hand_in(client, answers, name="ps1.ipynb"):
    given = student_version(json.loads(json.dumps(sources.three_questions())))
    body = sources.student_notebook(given, answers)
    response = client.post(
        f"{BASE}assignments/ps1/submissions/", {"files": [SimpleUploadedFile(name, body)]}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return Submission.objects.get(pk=response.json()["id"])


OK = {"reply": "ok", "proof": True, "reset": True, "error": False, "ename": "", "evalue": "", "stderr": False,
      "result": None, "seconds": 0.01, "undone": [], "restored": [], "cell_index": 0}  # fmt: skip


def node_reports(submission, observations, *, state=RunState.SUCCEEDED):
    """Play the node's part: the grading run ends with this report."""
    run = Run.objects.get(graded_file__submission=submission)
    Run.objects.filter(pk=run.pk).update(
        state=state, finished_at=timezone.now(), grading_report={"cells": observations, "finished": True}
    )
    record_grading(run.pk)
    submission.refresh_from_db()
    return run


def test_a_submission_queues_a_grading_run_in_the_courses_grading_project(
    course, client_for, django_capture_on_commit_callbacks
):
    course_, _, people = course
    project = course_.grading_project
    assert project is not None
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"ines": "maintainer", "tariq": "viewer"}  # students are never members
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(client_for(people["stella"]), sources.ANSWERS["honest"])
    submission.refresh_from_db()
    assert submission.state == "grading"
    run = Run.objects.get(graded_file__submission=submission)
    assert run.kind == "grading"
    assert run.created_by is None
    assert run.project == project
    assert [d.dataset.name for d in run.input_datasets.all()] == ["ps1"]
    with default_storage.open(run.notebook_version.storage_name) as blob:
        graded = blob.read().decode()
    assert sources.HIDDEN_MARK in graded  # the hidden tests, restored for grading
    assert "return a + b" in graded  # the student's answer
    assert "To divide." not in graded  # never the instructor's solution
    # the staff follow the course: a TA made instructor becomes a maintainer, a removed one goes
    member_set(course=course_, username="tariq", role=CourseRole.INSTRUCTOR)
    assert Membership.objects.get(project=project, user=people["tariq"]).role == "maintainer"
    member_remove(course=course_, username="tariq")
    assert not Membership.objects.filter(project=project, user=people["tariq"]).exists()
    # and nobody changes them, or the project's visibility, behind the course's back
    ines = client_for(people["ines"])
    added = ines.post(
        f"/api/v1/projects/{project.slug}/members/", {"username": "stella", "role": "viewer"}, format="json"
    )
    assert added.status_code == 400
    assert "course" in str(added.json())
    public = ines.patch(f"/api/v1/projects/{project.slug}/", {"visibility": "public"}, format="json")
    assert public.status_code in (400, 403)
    assert not Membership.objects.filter(project=project, user=people["stella"]).exists()


@pytest.mark.parametrize(
    ("owner", "lists_project", "grades", "takes"),
    [
        ("ines", True, True, True),
        ("ines", False, True, False),
        ("ines", True, False, False),  # an agent from before grading would run it as a notebook
        ("tariq", True, True, False),
        ("stella", True, True, False),
        ("root", False, True, True),
    ],
)
def test_only_the_instructors_registered_nodes_or_staff_shared_ones_grade(
    course, client_for, django_capture_on_commit_callbacks, owner, lists_project, grades, takes
):
    course_, _, people = course
    with django_capture_on_commit_callbacks(execute=True):
        hand_in(client_for(people["stella"]), sources.ANSWERS["honest"])
    node = compute.node_register(owner=people[owner], name="n").node
    node.capabilities = {"run_kinds": ["notebook", "grading"]} if grades else {}
    node.shared = owner == "root"
    node.save()
    if lists_project:
        node.projects.add(course_.grading_project)
    claim = run_claim(node=node)
    assert (claim is not None) == takes


def test_a_nodes_report_becomes_cell_grades_and_a_score(course, client_for, django_capture_on_commit_callbacks):
    _, _, people = course
    stella = client_for(people["stella"])
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(stella, sources.ANSWERS["honest"])
    node_reports(
        submission,
        [
            {**OK, "grade_id": "test_add", "undone": ["input transformers"]},
            {**OK, "grade_id": "test_mean", "result": "1.5"},
        ],
    )
    assert submission.state == "graded"
    assert submission.raw_score == 3.5
    body = stella.get(f"{BASE}assignments/ps1/submissions/{submission.pk}/").json()
    assert body["score"] == 3.5
    assert body["max_score"] == 7
    assert body["needs_manual_grading"] is True
    cells = {c["grade_id"]: c for c in body["files"][0]["cells"]}
    assert set(cells["test_add"]) == {
        "grade_id",
        "kind",
        "max_points",
        "points",
        "outcome",
        "message",
        "hidden",
        "comment",
    }
    assert cells["test_mean"]["outcome"] == "partial"
    staff = client_for(people["tariq"]).get(f"{BASE}assignments/ps1/submissions/{submission.pk}/").json()
    staff_cells = {c["grade_id"]: c for c in staff["files"][0]["cells"]}
    assert "tampering suspected" in staff_cells["test_add"]["flags"][0]


def test_a_test_the_node_never_reported_scores_0(course, client_for, django_capture_on_commit_callbacks):
    _, _, people = course
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(client_for(people["stella"]), sources.ANSWERS["honest"])
    node_reports(submission, [{**OK, "grade_id": "test_add"}], state=RunState.FAILED)  # stopped at a limit
    assert submission.state == "graded"
    assert submission.raw_score == 2.0


def test_a_lost_grading_run_fails_the_submission_and_the_reconciler_records_late_reports(
    course, client_for, django_capture_on_commit_callbacks
):
    _, _, people = course
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(client_for(people["stella"]), sources.ANSWERS["honest"])
    run = Run.objects.get(graded_file__submission=submission)
    Run.objects.filter(pk=run.pk).update(state=RunState.LOST, finished_at=timezone.now() - dt.timedelta(minutes=5))
    assert reconcile() == 1  # its run_finished receiver never ran: the reconciler records it
    submission.refresh_from_db()
    assert submission.state == "failed"
    assert submission.score is None


def test_late_work_loses_its_percentage(course, client_for, django_capture_on_commit_callbacks):
    _, assignment, people = course
    assignment.due_at = timezone.now() - dt.timedelta(days=1, hours=1)  # two days late, 10 % a day
    assignment.save()
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(client_for(people["stella"]), sources.ANSWERS["honest"])
    node_reports(submission, [{**OK, "grade_id": "test_add"}, {**OK, "grade_id": "test_mean"}])
    assert submission.raw_score == 5
    assert submission.score == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("visibility", "due_in_days", "released", "visible"),
    [
        (ResultsVisibility.AFTER_DUE, 1, False, False),
        (ResultsVisibility.AFTER_DUE, -1, False, True),
        (ResultsVisibility.ON_RELEASE, -1, False, False),
        (ResultsVisibility.ON_RELEASE, 1, True, True),
    ],
)
def test_students_see_results_by_the_assignments_policy(
    course, client_for, django_capture_on_commit_callbacks, visibility, due_in_days, released, visible
):
    _, assignment, people = course
    stella = client_for(people["stella"])
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(stella, sources.ANSWERS["honest"])
    node_reports(submission, [{**OK, "grade_id": "test_add"}, {**OK, "grade_id": "test_mean"}])
    assignment.results_visibility = visibility
    assignment.due_at = timezone.now() + dt.timedelta(days=due_in_days)
    assignment.grades_released_at = timezone.now() if released else None
    assignment.save()
    body = stella.get(f"{BASE}assignments/ps1/submissions/{submission.pk}/").json()
    assert body["results_visible"] is visible
    assert (body["score"] is not None) is visible
    assert bool(body["files"][0]["cells"]) is visible
    feedback = stella.get(f"{BASE}assignments/ps1/submissions/{submission.pk}/feedback/?notebook=ps1.ipynb")
    assert feedback.status_code == 404  # no feedback notebook here (no node ran it); hidden or not, 404
    staff = client_for(people["ines"]).get(f"{BASE}assignments/ps1/submissions/{submission.pk}/").json()
    assert staff["score"] == 5


def test_the_gradebook_counts_each_students_latest_submission(
    course, client_for, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    _, _, people = course
    people["stella"].first_name, people["stella"].last_name = "Stella", "=HYPERLINK()"
    people["stella"].save()
    stella = client_for(people["stella"])
    with django_capture_on_commit_callbacks(execute=True):
        first = hand_in(stella, sources.ANSWERS["blank"])
        second = hand_in(stella, sources.ANSWERS["honest"])
    node_reports(first, [])
    node_reports(second, [{**OK, "grade_id": "test_add"}, {**OK, "grade_id": "test_mean"}])
    ines = client_for(people["ines"])
    with django_assert_max_num_queries(12):
        book = ines.get(f"{BASE}gradebook/").json()
    rows = {s["username"]: s["assignments"]["ps1"] for s in book["students"]}
    assert rows["stella"]["submission"] == second.pk
    assert rows["stella"]["score"] == 5
    assert rows["stella"]["cells"]["ps1.ipynb:test_add"] == 2
    assert rows["sven"] == {"submission": None, "state": "missing", "score": 0.0, "max_score": 7.0}
    response = ines.get(f"{BASE}gradebook/?format=csv")
    assert response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(table[0]) == [
        "assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
        "raw_score", "late_submission_penalty", "score", "max_score",
    ]  # fmt: skip
    by_student = {row["student_id"]: row for row in table}
    assert by_student["stella"]["score"] == "5.0"
    assert by_student["stella"]["last_name"] == "'=HYPERLINK()"  # never a formula in a spreadsheet
    assert by_student["sven"]["raw_score"] == "0.0"
    assert client_for(people["stella"]).get(f"{BASE}gradebook/").status_code == 403
    assert client_for(people["olga"]).get(f"{BASE}gradebook/").status_code == 404
    assert client_for(people["olga"]).get(f"{BASE}gradebook/?format=csv").status_code == 404


def test_graders_grade_manual_cells_and_instructors_override_tests_with_a_reason(
    course, client_for, django_capture_on_commit_callbacks
):
    _, _, people = course
    stella, ines, tariq = (client_for(people[n]) for n in ("stella", "ines", "tariq"))
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(stella, sources.ANSWERS["honest"])
    node_reports(submission, [{**OK, "grade_id": "test_add"}, {**OK, "grade_id": "test_mean", "result": "1.5"}])
    url = f"{BASE}assignments/ps1/submissions/{submission.pk}/cells/"

    queue = tariq.get(f"{BASE}assignments/ps1/grading-queue/").json()
    assert [(item["grade_id"], item["student"]) for item in queue["results"]] == [("explain", None), ("sketch", None)]
    assert tariq.get(f"{BASE}assignments/ps1/grading-queue/?names=1").json()["results"][0]["student"] == "stella"
    assert stella.get(f"{BASE}assignments/ps1/grading-queue/").status_code == 403

    graded = tariq.patch(f"{url}explain/", {"points": 1, "comment": "Right: it divides."}, format="json")
    assert graded.status_code == 200, graded.content
    assert graded.json()["score"] == 4.5  # 2 + 1.5 + 1
    assert tariq.patch(f"{url}sketch/", {"points": 5}, format="json").status_code == 400  # above its points
    assert tariq.patch(f"{url}sketch/", {"points": True}, format="json").status_code == 400
    assert tariq.patch(f"{url}nope/", {"points": 1}, format="json").status_code == 400
    assert tariq.patch(f"{url}test_mean/", {"points": 3, "reason": "typo"}, format="json").status_code == 403
    assert ines.patch(f"{url}test_mean/", {"points": 3}, format="json").status_code == 400  # no reason
    override = ines.patch(f"{url}test_mean/", {"points": 3, "reason": "the test had a typo"}, format="json")
    assert override.json()["score"] == 6.0
    assert stella.patch(f"{url}explain/", {"points": 1}, format="json").status_code == 403

    mine = {
        c["grade_id"]: c
        for c in stella.get(f"{BASE}assignments/ps1/submissions/{submission.pk}/").json()["files"][0]["cells"]
    }
    assert mine["explain"]["comment"] == "Right: it divides."
    assert "changes" not in mine["explain"]  # the log is the staff's
    staff = {
        c["grade_id"]: c
        for c in ines.get(f"{BASE}assignments/ps1/submissions/{submission.pk}/").json()["files"][0]["cells"]
    }
    assert [
        (c["changed_by"], c["old_points"], c["new_points"], c["reason"]) for c in staff["test_mean"]["changes"]
    ] == [("ines", 1.5, 3.0, "the test had a typo")]

    # Grading again replaces what the autograder said; what a person graded stays, with its log.
    with django_capture_on_commit_callbacks(execute=True):
        again = ines.post(f"{BASE}assignments/ps1/submissions/{submission.pk}/regrade/")
    assert again.status_code == 202
    assert again.json()["state"] == "grading"
    node_reports(submission, [{**OK, "grade_id": "test_add"}, {**OK, "grade_id": "test_mean", "result": "1.5"}])
    cells = {c.grade_id: c for c in CellGrade.objects.filter(file__submission=submission)}
    assert (cells["explain"].points, cells["explain"].outcome) == (1, "graded")
    assert (cells["test_mean"].points, cells["test_mean"].auto_points) == (3, 1.5)
    assert cells["test_mean"].changes.count() == 1
    assert submission.score == 6


def test_a_student_asks_for_a_regrade_and_the_grader_answers(course, client_for, django_capture_on_commit_callbacks):
    _, _, people = course
    stella, sven, tariq = (client_for(people[n]) for n in ("stella", "sven", "tariq"))
    with django_capture_on_commit_callbacks(execute=True):
        submission = hand_in(stella, sources.ANSWERS["honest"])
    node_reports(submission, [{**OK, "grade_id": "test_add"}, {**OK, "grade_id": "test_mean"}])
    tariq.patch(f"{BASE}assignments/ps1/submissions/{submission.pk}/cells/explain/", {"points": 0}, format="json")
    ask = f"{BASE}assignments/ps1/submissions/{submission.pk}/cells/explain/regrade/"
    assert stella.post(ask, {"message": ""}, format="json").status_code == 400
    assert sven.post(ask, {"message": "mine?"}, format="json").status_code == 404  # not theirs: not there
    made = stella.post(ask, {"message": "I did say it divides by the count."}, format="json")
    assert made.status_code == 201, made.content
    assert stella.post(ask, {"message": "again"}, format="json").status_code == 400  # one open at a time
    assert [r["student"] for r in tariq.get(f"{BASE}assignments/ps1/regrade-requests/").json()["results"]] == ["stella"]
    assert sven.get(f"{BASE}assignments/ps1/regrade-requests/").json()["results"] == []
    answer = f"{BASE}assignments/ps1/regrade-requests/{made.json()['id']}/answer/"
    assert stella.post(answer, {"answer": "ok", "points": 1}, format="json").status_code == 403
    answered = tariq.post(answer, {"answer": "Fair: full marks.", "points": 1}, format="json")
    assert answered.json()["state"] == "answered"
    submission.refresh_from_db()
    assert submission.score == 6.0
    assert tariq.post(answer, {"answer": "again"}, format="json").status_code == 400


def attach_feedback(run, nb: dict) -> None:
    """What the node uploads beside the graded notebook: the feedback notebook, as an artifact."""
    blob = store_blob(io.BytesIO(json.dumps(nb).encode()))
    RunArtifact.objects.create(
        run=run,
        attempt=run.attempt,
        path="feedback.ipynb",
        sha256=blob.sha256,
        size=blob.size,
        storage_name=blob.storage_name,
    )


def test_the_grading_pages(course, client, django_capture_on_commit_callbacks):
    _, _, people = course
    page = "/courses/cs1/a/ps1/"
    client.force_login(people["stella"])
    given = student_version(json.loads(json.dumps(sources.three_questions())))
    body = sources.student_notebook(given, sources.ANSWERS["honest"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{page}submit/", {"files": [SimpleUploadedFile("ps1.ipynb", body)]})
    submission = Submission.objects.get(student=people["stella"])
    assert response.status_code == 302
    assert response["Location"] == f"{page}s/{submission.pk}/"
    run = node_reports(
        submission, [{**OK, "grade_id": "test_add", "undone": ["ast_transformers"]}, {**OK, "grade_id": "test_mean"}]
    )
    attach_feedback(run, json.loads(body))

    mine = client.get(f"{page}s/{submission.pk}/")
    assert mine.status_code == 200
    assert b'id="score">5<' in mine.content
    assert b"tampering suspected" not in mine.content  # the grader's notes are the staff's
    assert b"grade-form" not in mine.content
    frame = client.get(f"{page}s/{submission.pk}/feedback/0/")
    assert frame.status_code == 200
    assert "sandbox" in frame["Content-Security-Policy"]
    assert sources.HIDDEN_MARK.encode() not in frame.content
    asked = client.post(f"{page}s/{submission.pk}/regrade/", {"grade_id": "explain", "message": "please"})
    assert asked.status_code == 302
    assert RegradeRequest.objects.filter(student=people["stella"]).count() == 1
    assert client.get(f"{page}queue/").status_code == 403
    assert client.get("/courses/cs1/gradebook/").status_code == 403

    for outsider in ("sven", "olga"):  # another student; not in the course
        client.force_login(people[outsider])
        assert client.get(f"{page}s/{submission.pk}/").status_code == 404
        assert client.get(f"{page}s/{submission.pk}/feedback/0/").status_code == 404
    assert client.get("/courses/cs1/gradebook/").status_code == 404

    client.force_login(people["tariq"])
    staff = client.get(f"{page}s/{submission.pk}/")
    assert b"tampering suspected" in staff.content
    assert b"grade-form" in staff.content
    graded = client.post(f"{page}s/{submission.pk}/grade/", {"grade_id": "explain", "points": "1", "comment": "good"})
    assert graded.status_code == 302
    submission.refresh_from_db()
    assert submission.score == 6
    client.post(f"{page}s/{submission.pk}/grade/", {"grade_id": "test_add", "points": "0", "reason": "no"})
    submission.refresh_from_db()
    assert submission.score == 6  # a TA does not override a test
    queue = client.get(f"{page}queue/")
    assert b"sketch" in queue.content
    assert b"stella" not in queue.content  # anonymous by default
    book = client.get("/courses/cs1/gradebook/")
    assert book.status_code == 200
    assert b"gradebook-csv" in book.content
    assert b"stella" in book.content
