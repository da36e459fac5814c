"""Courses through the API: private to their members (404 to anyone else), roles enforced,
rosters imported with a report of the rows that failed, invite links that can be revoked."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.courses.models import Course, CourseMembership, CourseRole
from apps.courses.services import course_create, member_set
from tests.factories import make_user


@pytest.fixture
def people(db):
    return {
        "instructor": make_user("ines"),
        "ta": make_user("tariq"),
        "student": make_user("stella"),
        "other_student": make_user("oskar"),
        "outsider": make_user("olga"),
    }


@pytest.fixture
def course(people) -> Course:
    course = course_create(creator=people["instructor"], slug="stats-101", title="Statistics 101")
    member_set(course=course, username="tariq", role=CourseRole.TA)
    member_set(course=course, username="stella", role=CourseRole.STUDENT)
    member_set(course=course, username="oskar", role=CourseRole.STUDENT)
    return course


def roster(client, slug: str, text: str | bytes):
    content = text.encode() if isinstance(text, str) else text
    return client.post(
        f"/api/v1/courses/{slug}/roster/", {"file": SimpleUploadedFile("roster.csv", content)}, format="multipart"
    )


def test_creating_a_course_makes_its_creator_the_instructor(client_for, people):
    client = client_for(people["outsider"])
    response = client.post("/api/v1/courses/", {"slug": "ml-2027", "title": "Machine learning"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["your_role"] == "instructor"
    again = client.post("/api/v1/courses/", {"slug": "ml-2027", "title": "Again"}, format="json")
    assert again.status_code == 400
    assert "already exists" in str(again.json())
    assert client_for(None).post("/api/v1/courses/", {"slug": "x", "title": "x"}, format="json").status_code == 401


@pytest.mark.parametrize(
    ("who", "detail", "members", "add", "roster_status", "invites"),
    [
        ("instructor", 200, 200, 201, 200, 201),
        ("ta", 200, 200, 403, 403, 403),
        ("student", 200, 200, 403, 403, 403),
        ("outsider", 404, 404, 404, 404, 404),
        ("anonymous", 401, 401, 401, 401, 401),
    ],
)
def test_the_permission_matrix(client_for, people, course, who, detail, members, add, roster_status, invites):
    client = client_for(people.get(who))
    base = f"/api/v1/courses/{course.slug}"
    assert client.get(f"{base}/").status_code == detail
    assert client.get(f"{base}/members/").status_code == members
    assert client.post(f"{base}/members/", {"username": "olga", "role": "student"}, format="json").status_code == add
    assert roster(client, course.slug, "username\nolga\n").status_code == roster_status
    assert client.post(f"{base}/invites/").status_code == invites
    assert client.delete(f"{base}/members/oskar/").status_code == (204 if who == "instructor" else add)
    listed = client.get("/api/v1/courses/")
    if who == "anonymous":
        assert listed.status_code == 401
    else:
        assert [c["slug"] for c in listed.json()["results"]] == ([] if who == "outsider" else ["stats-101"])


def test_a_student_sees_the_teaching_staff_and_themselves_never_other_students(client_for, people, course):
    seen = client_for(people["student"]).get(f"/api/v1/courses/{course.slug}/members/").json()["results"]
    assert sorted(m["username"] for m in seen) == ["ines", "stella", "tariq"]
    staff_view = client_for(people["ta"]).get(f"/api/v1/courses/{course.slug}/members/").json()["results"]
    assert sorted(m["username"] for m in staff_view) == ["ines", "oskar", "stella", "tariq"]


def test_the_last_instructor_stays_one(client_for, people, course):
    client = client_for(people["instructor"])
    demote = client.post(f"/api/v1/courses/{course.slug}/members/", {"username": "ines", "role": "ta"}, format="json")
    assert demote.status_code == 400
    assert "at least one instructor" in str(demote.json())
    assert client.delete(f"/api/v1/courses/{course.slug}/members/ines/").status_code == 400
    promote = client.post(
        f"/api/v1/courses/{course.slug}/members/", {"username": "tariq", "role": "instructor"}, format="json"
    )
    assert promote.status_code == 201
    assert client.delete(f"/api/v1/courses/{course.slug}/members/ines/").status_code == 204


def test_a_roster_enrols_students_and_reports_each_row_that_failed(client_for, people, course):
    make_user("rosa").__class__.objects.filter(username="rosa").update(email="Rosa@Example.org")
    twin_a, twin_b = make_user("twin-a"), make_user("twin-b")
    twin_a.__class__.objects.filter(pk__in=[twin_a.pk, twin_b.pk]).update(email="twins@example.org")
    csv_text = (
        "name,email\n"
        "Rosa R,rosa@example.org\n"  # unverified e-mail: never matched to an account
        "Nobody,nobody\n"
        "Twins,twins@example.org\n"
        "Stella,stella\n"  # a username in the e-mail column: taken as a username
        "Tariq,tariq\n"  # the TA keeps their role
        ",,\n"
        "Olga,olga\n"
        "Rosa,rosa\n"
    )
    report = roster(client_for(people["instructor"]), course.slug, csv_text)
    assert report.status_code == 200, report.content
    body = report.json()
    assert sorted(body["added"]) == ["olga", "rosa"]
    assert body["already"] == ["stella"]
    unverified = "e-mail addresses are not verified here: give the username, or send the course's invite link"
    assert body["failed"] == [
        {"row": 2, "value": "rosa@example.org", "reason": unverified},
        {"row": 3, "value": "nobody", "reason": "no such user"},
        {"row": 4, "value": "twins@example.org", "reason": unverified},
        {"row": 6, "value": "tariq", "reason": "already a teaching assistant"},
    ]
    assert CourseMembership.objects.get(course=course, user__username="tariq").role == "ta"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00u", "UTF-8"),
        (b"username\n" + b"x\n" * 5001, "at most 5000 rows"),
        (b"a" * (1024 * 1024 + 1), "the limit is 1.0 MiB"),
    ],
)
def test_bad_rosters_are_a_400_or_413(client_for, people, course, content, message):
    response = roster(client_for(people["instructor"]), course.slug, content)
    assert response.status_code in (400, 413)
    assert message in str(response.json())


def test_an_invite_link_enrols_until_revoked(client_for, people, course):
    instructor = client_for(people["instructor"])
    made = instructor.post(f"/api/v1/courses/{course.slug}/invites/")
    assert made.status_code == 201
    token = made.json()["token"]
    outsider = client_for(people["outsider"])
    joined = outsider.post("/api/v1/courses/-/join/", {"token": token}, format="json")
    assert joined.status_code == 200
    assert joined.json()["your_role"] == "student"
    # A TA following the link stays a TA.
    assert client_for(people["ta"]).post("/api/v1/courses/-/join/", {"token": token}, format="json").status_code == 200
    assert CourseMembership.objects.get(course=course, user=people["ta"]).role == "ta"
    listed = instructor.get(f"/api/v1/courses/{course.slug}/invites/").json()["results"]
    assert listed[0]["joined"] == 1
    assert "token" not in listed[0]  # shown once, when made
    assert instructor.delete(f"/api/v1/courses/{course.slug}/invites/{listed[0]['id']}/").status_code == 204
    late = client_for(make_user("late")).post("/api/v1/courses/-/join/", {"token": token}, format="json")
    assert late.status_code == 404
    assert (
        client_for(make_user("guess")).post("/api/v1/courses/-/join/", {"token": "rlc_x"}, format="json").status_code
        == 404
    )
