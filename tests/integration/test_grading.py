"""Autograding end to end: a course, an nbgrader-format assignment released through the API,
students who download it, submit honest, partial and tampering notebooks through the API, and
real agents (in their sandbox, no network) that grade them as runs of kind grading.

The tamper suite: every way of tampering the teaching issue lists must not raise the score of a
notebook whose `add` is wrong (its `mean` is right: 3 of 6 test points at most), and hidden tests
must not reach the student anywhere: not in the release, the submission's API answer, the feedback
notebook, or the runs (404 to students)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Node, Run
from apps.courses import services as courses
from apps.courses.assignments import Incoming, assignment_create, assignment_release
from apps.courses.models import Course, Submission, SubmissionState
from tests.courses import grading_sources as sources
from tests.courses.nbgrader_env import autograde as nbgrader_autograde
from tests.factories import PASSWORD, make_token, make_user

from .browser import in_orm_thread, log_in
from .fabric import FAST_LEASES
from .servers import agent_process, daphne_server, stopping, wait_until

pytestmark = pytest.mark.integration

AGENT_LIMITS = {"REPROLAB_RUN_MEMORY_MB": "768", "REPROLAB_RUN_PROCESSES": "64"}
GRADED = {SubmissionState.GRADED, SubmissionState.FAILED}
# Tampering that ends the kernel, or the run at its process limit, before any test. (The memory
# hog meets the run's memory limit as a MemoryError in its own cell; the tests after it run.)
KERNEL_DOWN = ("os_exit", "kills_kernel", "fork_bomb")
# Tampering the grader undoes before the test (and names for the instructor), or sees through.
TAMPERING_FLAGGED = {
    "input_transformer",
    "selective_transformer",
    "ast_transformer",
    "showtraceback",
    "custom_exception_handler",
    "replaced_run_cell",
    "replaced_execute_handler",
    "settrace",
    "compiler_patch",
}


@dataclass
class CourseStack:
    url: str
    course: Course
    instructor: User
    tmp: Path
    exits: ExitStack

    def api(self, token: str, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(
            method, f"{self.url}/api/v1/courses/{self.course.slug}/{path}", headers=headers, timeout=60, **kwargs
        )

    def student(self, username: str) -> str:
        courses.member_set(course=self.course, username=make_user(username).username, role="student")
        return make_token(User.objects.get(username=username))

    def start_agent(self, name: str, *, concurrency: int = 2) -> None:
        registered = compute.node_register(owner=self.instructor, name=name, max_concurrency=concurrency)
        assert self.course.grading_project is not None
        registered.node.projects.add(self.course.grading_project)
        agent = agent_process(
            self.url, registered.token, self.tmp / name, name=name, concurrency=concurrency, env=AGENT_LIMITS
        )
        self.exits.enter_context(stopping(agent))
        wait_until(
            lambda: Node.objects.filter(pk=registered.node.pk, last_seen_at__isnull=False).exists(),
            timeout=30,
            what=f"agent {name} to say hello",
        )


@pytest.fixture
def course_stack(transactional_db, require_redis, tmp_path):
    instructor = make_user("prof")
    course = courses.course_create(creator=instructor, slug="cs101", title="Programming 101")
    source = json.dumps(sources.three_questions()).encode()
    assignment = assignment_create(
        course=course,
        creator=instructor,
        name="ps1",
        files=[Incoming("ps1.ipynb", io.BytesIO(source)), Incoming("data.csv", io.BytesIO(sources.DATA.encode()))],
    )
    assignment_release(assignment=assignment)
    with ExitStack() as exits:
        url = exits.enter_context(daphne_server(**FAST_LEASES))
        yield CourseStack(url, Course.objects.get(pk=course.pk), instructor, tmp_path, exits)


def download_student_version(stack: CourseStack, token: str) -> dict:
    response = stack.api(token, "GET", "assignments/ps1/release/")
    assert response.status_code == 200, response.text
    assert sources.HIDDEN_MARK.encode() not in response.content
    assert sources.RUBRIC_MARK.encode() not in response.content
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["ps1/data.csv", "ps1/ps1.ipynb"]
        return json.loads(archive.read("ps1/ps1.ipynb"))


def submit(stack: CourseStack, token: str, body: bytes) -> int:
    response = stack.api(token, "POST", "assignments/ps1/submissions/", files=[("files", ("ps1.ipynb", body))])
    assert response.status_code == 201, response.text
    assert response.json()["state"] in ("received", "grading")
    return response.json()["id"]


def wait_graded(submission_id: int, timeout: float = 180) -> Submission:
    wait_until(
        lambda: Submission.objects.get(pk=submission_id).state in GRADED,
        timeout=timeout,
        what=f"submission {submission_id} to be graded",
    )
    return Submission.objects.get(pk=submission_id)


def test_honest_and_partial_submissions_are_graded_on_a_node(course_stack):
    stack = course_stack
    stack.start_agent("grader")
    token = stack.student("ada")
    given = download_student_version(stack, token)
    honest = submit(stack, token, sources.student_notebook(given, sources.ANSWERS["honest"]))
    partial = submit(stack, token, sources.student_notebook(given, sources.ANSWERS["partial"]))
    blank = submit(stack, token, sources.student_notebook(given, sources.ANSWERS["blank"]))

    graded = wait_graded(honest)
    assert graded.state == "graded"
    body = stack.api(token, "GET", f"assignments/ps1/submissions/{honest}/").json()
    assert body["results_visible"] is True
    assert body["max_score"] == 7
    staff = stack.api(make_token(stack.instructor), "GET", f"assignments/ps1/submissions/{honest}/").json()
    assert body["score"] == 5, json.dumps(staff)  # both tests; the explanation and the task wait for a grader
    assert body["needs_manual_grading"] is True
    cells = {c["grade_id"]: c for c in body["files"][0]["cells"]}
    assert cells["test_add"] == {
        "grade_id": "test_add", "kind": "test", "max_points": 2.0, "points": 2.0,
        "outcome": "passed", "message": "", "hidden": True, "comment": "",
    }  # fmt: skip
    assert cells["test_mean"]["points"] == 3.0
    assert cells["explain"]["outcome"] == "needs_grading"
    assert cells["explain"]["points"] is None
    feedback = requests.get(body["files"][0]["feedback"], headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert feedback.status_code == 200
    assert sources.HIDDEN_MARK.encode() not in feedback.content
    assert sources.RUBRIC_MARK.encode() not in feedback.content
    assert "def add(a, b):\\n    return a + b" in feedback.text  # the student's own answers, executed

    body = stack.api(token, "GET", f"assignments/ps1/submissions/{wait_graded(partial).pk}/").json()
    cells = {c["grade_id"]: c for c in body["files"][0]["cells"]}
    assert cells["test_add"]["points"] == 0
    assert cells["test_add"]["message"] == "A hidden test failed."
    assert cells["test_mean"]["points"] == 1.5
    assert cells["test_mean"]["outcome"] == "partial"
    assert body["score"] == 1.5
    assert sources.HIDDEN_MARK not in json.dumps(body)

    body = stack.api(token, "GET", f"assignments/ps1/submissions/{wait_graded(blank).pk}/").json()
    cells = {c["grade_id"]: c for c in body["files"][0]["cells"]}
    assert cells["test_add"]["message"].startswith("NotImplementedError")
    assert cells["explain"]["outcome"] == "no_response"
    assert cells["explain"]["points"] == 0
    assert body["score"] == 0

    # The runs are the grading project's: the student sees none of them.
    run = Run.objects.get(graded_file__submission_id=honest)
    assert run.kind == "grading"
    response = requests.get(
        f"{stack.url}/api/v1/runs/{run.pk}/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 404
    staff = stack.api(make_token(stack.instructor), "GET", f"assignments/ps1/submissions/{honest}/").json()
    assert staff["files"][0]["run"] == run.pk


def test_tampering_never_raises_a_score(course_stack):
    stack = course_stack
    stack.start_agent("grader-a")
    stack.start_agent("grader-b")
    token = stack.student("mallory")
    given = download_student_version(stack, token)
    submitted = {name: submit(stack, token, sources.tampered_notebook(given, name)) for name in sources.TAMPERING}
    submitted["edited_tests"] = submit(stack, token, sources.edited_tests_notebook(given))
    instructor = make_token(stack.instructor)
    for name, submission_id in submitted.items():
        submission = wait_graded(submission_id, timeout=300)
        staff = stack.api(instructor, "GET", f"assignments/ps1/submissions/{submission_id}/").json()
        file = staff["files"][0]
        cells = {c["grade_id"]: c for c in file["cells"]}
        assert submission.state == "graded", (name, file["grading_error"])
        assert cells["test_add"]["points"] == 0, (name, cells["test_add"])
        # mean is right: it keeps its 3 points, unless the tampering took the kernel down first.
        # (A kernel whose execute handler was replaced runs nothing more: every later test is 0.)
        expected_mean = 0 if name in ("edited_tests", "replaced_execute_handler", *KERNEL_DOWN) else 3
        assert cells["test_mean"]["points"] == expected_mean, (name, cells["test_mean"])
        student = stack.api(token, "GET", f"assignments/ps1/submissions/{submission_id}/")
        assert sources.HIDDEN_MARK not in student.text, name
        feedback = requests.get(
            student.json()["files"][0]["feedback"], headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert sources.HIDDEN_MARK.encode() not in feedback.content, name
        assert sources.RUBRIC_MARK.encode() not in feedback.content, name
        if name in TAMPERING_FLAGGED:
            assert any("tampering suspected" in flag for flag in cells["test_add"]["flags"]), (name, cells)
        if name in KERNEL_DOWN:
            assert cells["test_add"]["outcome"] == "no_reply", (name, cells)
        if name == "edited_tests":
            assert any("was edited" in flag for flag in file["flags"]), file["flags"]
            assert cells["test_add"]["max_points"] == 2  # the instructor's points, not the student's 100


def test_honest_submissions_score_as_nbgrader_autograde_scores_them(course_stack, tmp_path):
    """The same honest submissions, graded by the node and by nbgrader 0.9.6 itself: every graded
    cell gets the same automatic score, and the same cells wait for a grader."""
    stack = course_stack
    stack.start_agent("grader", concurrency=2)
    given = download_student_version(stack, stack.student("ref"))
    ours = {}
    for name, answers in sources.ANSWERS.items():
        token = stack.student(f"s-{name}")
        ours[name] = (token, submit(stack, token, sources.student_notebook(given, answers)))

    root = tmp_path / "nbgrader"
    (root / "source" / "ps1").mkdir(parents=True)
    (root / "source" / "ps1" / "ps1.ipynb").write_text(json.dumps(sources.three_questions()))
    (root / "source" / "ps1" / "data.csv").write_text(sources.DATA)
    files = {name: {"ps1.ipynb": sources.student_notebook(given, answers)} for name, answers in sources.ANSWERS.items()}
    theirs, _ = nbgrader_autograde(root, "ps1", files)

    for name, (token, submission_id) in ours.items():
        wait_graded(submission_id)
        body = stack.api(token, "GET", f"assignments/ps1/submissions/{submission_id}/").json()
        cells = {c["grade_id"]: c for c in body["files"][0]["cells"]}
        assert set(cells) == set(theirs[name]), name
        for grade_id, reference in theirs[name].items():
            mine = cells[grade_id]
            assert (mine["outcome"] == "needs_grading") == reference["needs_manual"], (name, grade_id, mine)
            assert mine["points"] == reference["auto"], (name, grade_id, mine, reference)
            assert mine["max_points"] == reference["max"], (name, grade_id)


@pytest.fixture
def unreleased_course(transactional_db, require_redis, tmp_path):
    """A course with a student and an assignment not released yet, a daphne and a grading agent:
    made before the browser starts (Playwright's event loop forbids the ORM in the test)."""
    instructor = make_user("prof")
    make_user("ada")
    course = courses.course_create(creator=instructor, slug="cs101", title="Programming 101")
    courses.member_set(course=course, username="ada", role="student")
    source = json.dumps(sources.three_questions()).encode()
    assignment_create(
        course=course,
        creator=instructor,
        name="ps1",
        files=[Incoming("ps1.ipynb", io.BytesIO(source)), Incoming("data.csv", io.BytesIO(sources.DATA.encode()))],
    )
    with ExitStack() as exits:
        url = exits.enter_context(daphne_server(**FAST_LEASES))
        stack = CourseStack(url, Course.objects.get(pk=course.pk), instructor, tmp_path, exits)
        stack.start_agent("grader")
        yield stack


def test_the_student_and_instructor_paths_in_a_browser(unreleased_course, browser_page, tmp_path):
    """Chromium: the instructor releases the assignment; the student downloads it, submits their
    answers and sees the results and the feedback; the instructor grades the manual cell and
    exports the gradebook. A real agent grades in between."""
    url, page = unreleased_course.url, browser_page
    log_in(page, url, "prof", PASSWORD)
    page.goto(f"{url}/courses/cs101/a/ps1/")
    page.click("#release")
    page.wait_for_selector("text=Released: students can download it now.")

    instructor, page = page, page.context.browser.new_page()  # the student's own browser session
    log_in(page, url, "ada", PASSWORD)
    page.goto(f"{url}/courses/cs101/a/ps1/")
    with page.expect_download() as download:
        page.click("#download")
    with zipfile.ZipFile(download.value.path()) as archive:
        given = json.loads(archive.read("ps1/ps1.ipynb"))
    answers = tmp_path / "ps1.ipynb"
    answers.write_bytes(sources.student_notebook(given, sources.ANSWERS["honest"]))
    page.set_input_files("#submit-form input[type=file]", str(answers))
    page.click("#submit-form button")
    page.wait_for_url("**/s/*/")
    submission_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    in_orm_thread(lambda: wait_graded(submission_id))
    page.reload()
    assert page.inner_text("#score") == "5"
    frame = page.frame_locator("iframe.notebook-frame")
    frame.locator("text=return a + b").first.wait_for()
    assert sources.HIDDEN_MARK not in page.content()

    page = instructor
    page.goto(f"{url}/courses/cs101/a/ps1/queue/")
    page.click(f"text=#{submission_id}")
    page.wait_for_url(f"**/s/{submission_id}/**")
    page.fill("input[aria-label='Points for explain']", "1")
    page.fill("input[aria-label='Comment for explain']", "Right.")
    with page.expect_response(lambda response: response.url.endswith("/grade/")) as graded:
        page.locator("#cell-explain form.grade-form button").click()
    assert graded.value.status == 302, graded.value.text()
    page.wait_for_load_state()
    assert page.inner_text("#score") == "6"
    page.goto(f"{url}/courses/cs101/gradebook/")
    with page.expect_download() as export:
        page.click("#gradebook-csv")
    rows = list(csv.DictReader(io.StringIO(Path(export.value.path()).read_text())))
    assert [(r["student_id"], r["score"]) for r in rows] == [("ada", "6.0")]
