"""Course pages: members only (404 to anyone else), staff see members and unreleased work,
students see released assignments and their own submissions; invite links join on POST only."""

import io

import nbformat
import pytest

from apps.courses.assignments import Incoming, assignment_create, assignment_release
from apps.courses.models import CourseMembership, CourseRole
from apps.courses.services import course_create, invite_create, member_set
from apps.courses.submissions import submit
from tests.factories import make_user

from .sources import problem_set


@pytest.fixture
def setup(db):
    people = {name: make_user(name) for name in ("ines", "stella", "sven", "olga")}
    course = course_create(creator=people["ines"], slug="py-101", title="Python 101")
    for student in ("stella", "sven"):
        member_set(course=course, username=student, role=CourseRole.STUDENT)
    source = nbformat.writes(problem_set()).encode()
    released = assignment_create(
        course=course, creator=people["ines"], name="ps1", files=[Incoming("problem1.ipynb", io.BytesIO(source))]
    )
    assignment_release(assignment=released)
    assignment_create(
        course=course, creator=people["ines"], name="ps2", files=[Incoming("problem1.ipynb", io.BytesIO(source))]
    )
    submit(assignment=released, student=people["sven"], files=[Incoming("problem1.ipynb", io.BytesIO(source))])
    return people, course


def page(client, user, url: str):
    client.force_login(user)
    return client.get(url)


def test_the_course_pages_by_role(client, setup):
    people, _ = setup
    staff = page(client, people["ines"], "/courses/py-101/").content.decode()
    assert "ps2" in staff
    assert "sven" in staff  # the members
    student = page(client, people["stella"], "/courses/py-101/").content.decode()
    assert "ps1" in student
    assert "ps2" not in student  # not released
    assert "sven" not in student
    assert page(client, people["stella"], "/courses/py-101/a/ps2/").status_code == 404
    own = page(client, people["stella"], "/courses/py-101/a/ps1/").content.decode()
    assert "sven" not in own  # another student's submission
    assert "sven" in page(client, people["ines"], "/courses/py-101/a/ps1/").content.decode()
    assert page(client, people["olga"], "/courses/py-101/").status_code == 404
    assert page(client, people["olga"], "/courses/py-101/a/ps1/").status_code == 404
    assert "Python 101" not in page(client, people["olga"], "/courses/").content.decode()
    client.logout()
    assert client.get("/courses/py-101/").status_code == 302  # to the login page


def test_an_invite_link_joins_on_post_only(client, setup):
    people, course = setup
    token = invite_create(course=course, creator=people["ines"]).token
    client.force_login(people["olga"])
    assert client.get(f"/courses/join/{token}/").status_code == 200
    assert not CourseMembership.objects.filter(course=course, user=people["olga"]).exists()  # a GET changes nothing
    assert client.post("/courses/join/", {"token": token}).status_code == 302
    assert CourseMembership.objects.get(course=course, user=people["olga"]).role == CourseRole.STUDENT
    assert client.post("/courses/join/", {"token": "rlc_wrong"}).status_code == 404
