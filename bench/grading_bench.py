"""Grading throughput: N submissions of a three-question assignment graded through the platform
by two agents, against `nbgrader autograde` (0.9.6, in a virtual environment of its own:
tests/courses/nbgrader_env.py) on the very same submissions, on this machine, in one run.

The assignment is tests/courses/grading_sources.three_questions (a locked setup cell reading a data
file, two autograded answers with their tests, one with a hidden test, a manually graded
explanation); the submissions alternate honest and partly right answers. Ours: a real daphne
(SQLite, the embedded site), two real agents (sandboxed with bubblewrap where it works), every
submission POSTed through the API as its student; the clock runs from the first POST until every
submission is graded. Each of ours runs two executions (the feedback one without the hidden test,
then the graded one), each in a fresh sandbox. nbgrader: the `nbgrader autograde` command alone
(not generate_assignment, not building its virtual environment). Both sides' per-cell scores are
compared at the end: a bench that graded wrongly fast would fail.

Run: `.venv/bin/python bench/grading_bench.py [submissions]` (default 20; about two minutes, more
the first time, when it builds nbgrader's virtual environment under var/).
"""

import contextlib
import json
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from harness import ROOT, Stopped, api, phase, run_limited, serve, setup_django, site_env, start_agent

TMP = Path(tempfile.mkdtemp(prefix="reprolab-grading-bench-"))
ENV = site_env(TMP)
TIME_LIMIT = 900
TARGET = 5.0  # times nbgrader's submissions per minute
CONCURRENCY = 1  # runs each agent takes at a time (2 on this 2-core machine was slower: 3.4x)


def setup_course(count: int) -> tuple[list[str], dict[str, str], str, dict]:
    """A course with `count` students and the released assignment; two nodes of the instructor
    registered for its grading. Returns (node tokens, {student: API token}, instructor token,
    the student version)."""
    setup_django(ENV)
    import io

    from apps.accounts.services import api_token_create, user_create
    from apps.compute.services import node_register
    from apps.courses.assignments import Incoming, assignment_create, assignment_release
    from apps.courses.nbgrader_format import student_version
    from apps.courses.services import course_create, member_set
    from tests.courses import grading_sources as sources

    password = uuid.uuid4().hex  # a throwaway database: nobody logs in
    instructor = user_create(username="prof", password=password)
    course = course_create(creator=instructor, slug="bench", title="Bench 101")
    source = json.dumps(sources.three_questions()).encode()
    assignment = assignment_create(
        course=course,
        creator=instructor,
        name="ps1",
        files=[Incoming("ps1.ipynb", io.BytesIO(source)), Incoming("data.csv", io.BytesIO(sources.DATA.encode()))],
    )
    assignment_release(assignment=assignment)
    tokens = {}
    for i in range(count):
        student = user_create(username=f"s{i:03}", password=password)
        member_set(course=course, username=student.username, role="student")
        tokens[student.username] = api_token_create(user=student, name="bench").raw
    nodes = []
    assert course.grading_project is not None  # made with the course
    for i in range(2):
        registered = node_register(owner=instructor, name=f"grader{i}")
        registered.node.projects.add(course.grading_project)
        nodes.append(registered.token)
    given = student_version(json.loads(source))
    return nodes, tokens, api_token_create(user=instructor, name="bench").raw, given


def submissions(count: int, given: dict) -> dict[str, bytes]:
    from tests.courses import grading_sources as sources

    kinds = ("honest", "partial")
    return {f"s{i:03}": sources.student_notebook(given, sources.ANSWERS[kinds[i % 2]]) for i in range(count)}


def post_submission(base: str, token: str, body: bytes) -> int:
    boundary = uuid.uuid4().hex
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="ps1.ipynb"\r\n'
            "Content-Type: application/x-ipynb+json\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(  # noqa: S310 - our own local server
        f"{base}/api/v1/courses/bench/assignments/ps1/submissions/",
        data=payload,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return int(json.loads(response.read())["id"])


def wait_graded(base: str, token: str, count: int) -> list[dict]:
    """Every submission, once none is waiting: one list request every 50 ms."""
    while True:
        page = api(base, token, "GET", "/api/v1/courses/bench/assignments/ps1/submissions/?page_size=500")
        done = [s for s in page["results"] if s["state"] in ("graded", "failed")]
        if len(done) >= count:
            return done
        time.sleep(0.05)


def ours(processes: contextlib.ExitStack, count: int) -> tuple[float, dict[str, dict], dict]:
    phase(f"setting up a course with {count} students")
    nodes, tokens, instructor, given = setup_course(count)
    base = serve(processes, ENV)
    for i, token in enumerate(nodes):
        start_agent(processes, ENV, base, token, TMP / f"agent{i}", "--concurrency", str(CONCURRENCY))
    phase(f"grading {count} submissions through two agents")
    bodies = submissions(count, given)
    start = time.perf_counter()
    for student, body in bodies.items():
        post_submission(base, tokens[student], body)
    phase(f"all {count} submitted after {time.perf_counter() - start:.2f} s")
    graded = wait_graded(base, instructor, count)
    seconds = time.perf_counter() - start
    failed = [s for s in graded if s["state"] != "graded"]
    if failed:
        raise RuntimeError(f"{len(failed)} submissions could not be graded: {failed[0]['files']}")
    scores = {s["student"]: {c["grade_id"]: c["points"] for c in s["files"][0]["cells"]} for s in graded}
    return seconds, scores, given


def nbgrader(count: int, given: dict) -> tuple[float, dict[str, dict]]:
    from tests.courses import grading_sources as sources
    from tests.courses.nbgrader_env import autograde, nbgrader_python

    phase("nbgrader's virtual environment")
    nbgrader_python()
    phase(f"nbgrader autograde on the same {count} submissions")
    root = TMP / "nbgrader"
    (root / "source" / "ps1").mkdir(parents=True)
    (root / "source" / "ps1" / "ps1.ipynb").write_text(json.dumps(sources.three_questions()))
    (root / "source" / "ps1" / "data.csv").write_text(sources.DATA)
    files = {student: {"ps1.ipynb": body} for student, body in submissions(count, given).items()}
    grades, seconds = autograde(root, "ps1", files)
    return seconds, {student: {k: v["auto"] for k, v in cells.items()} for student, cells in grades.items()}


def measure(processes: contextlib.ExitStack) -> tuple[int, float, float]:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    seconds, scores, given = ours(processes, count)
    baseline, reference = nbgrader(count, given)
    if scores != reference:
        wrong = sorted(s for s in reference if scores.get(s) != reference[s])
        raise RuntimeError(
            f"per-cell scores differ from nbgrader's for {wrong[:5]}: {scores[wrong[0]]} vs {reference[wrong[0]]}"
        )
    return count, seconds, baseline


def report(count: int, seconds: float, baseline: float) -> None:
    ours_rate, their_rate = count / seconds * 60, count / baseline * 60
    print(f"grading {count} submissions of a three-question assignment (scores identical to nbgrader's):")
    print(f"  baseline  nbgrader autograde 0.9.6, serial     : {baseline:6.2f} s  ({their_rate:6.1f} per minute)")
    print(
        f"  ours      two agents, submit -> graded        : {seconds:6.2f} s  ({ours_rate:6.1f} per minute,"
        f" {ours_rate / their_rate:.2f}x nbgrader; target {TARGET:g}x)"
    )


def main() -> None:
    sys.path[:0] = [str(ROOT)]
    report(*run_limited(measure, time_limit=TIME_LIMIT, tmp=TMP))


if __name__ == "__main__":
    try:
        main()
    except (Stopped, KeyboardInterrupt) as why:
        sys.exit(f"stopped ({why or 'interrupted'}); every process it started is stopped")
