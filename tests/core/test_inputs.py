"""Untrusted numbers, JSON and request sizes get a 4xx with a clear message, never a 500:
the shared parsers of apps.core (inputs, parsers, converters), the URLs, query strings and
request bodies that use them, and the WebSocket router's answer to a path it does not know."""

import io
import json
import logging
import re

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ValidationError
from django.http import Http404
from django.urls import URLPattern, URLResolver, get_resolver
from reprolab_agent.environment import capture
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Run
from apps.core.inputs import (
    MAX_ID,
    MAX_JSON_DEPTH,
    JSONTooDeep,
    int_or_404,
    json_problem,
    loads_bounded,
    parse_int,
    without_nul,
)
from apps.projects import services as projects
from apps.projects.models import Project
from tests.factories import upload_notebook

DEEP = "[" * 5000 + "]" * 5000  # Python's json raises RecursionError on this
BEYOND = str(2**70)  # past every integer column: the database driver overflows


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


# --- the helpers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["²", "٣", "1²", "-1", " ", "", "1.0", "0x10", BEYOND, None])
def test_parse_int_refuses_anything_but_bounded_ascii_digits(raw):
    with pytest.raises(ValidationError) as caught:
        parse_int(raw, field="against", minimum=0)

    assert "against must be a whole number" in caught.value.message_dict["against"][0]


def test_parse_int_accepts_the_largest_id():
    assert parse_int(str(MAX_ID), field="id") == MAX_ID
    assert parse_int(" 42 ", field="id") == 42


def test_int_or_404_answers_404_with_the_message():
    with pytest.raises(Http404, match="No such version"):
        int_or_404("²", message="No such version.")


def test_loads_bounded_turns_the_decoders_recursion_error_into_too_deep():
    with pytest.raises(JSONTooDeep, match="nested too deeply"):
        loads_bounded(DEEP)


def test_loads_bounded_refuses_a_document_one_level_past_the_bound():
    assert loads_bounded(json.dumps(nested(MAX_JSON_DEPTH))) == nested(MAX_JSON_DEPTH)
    with pytest.raises(JSONTooDeep):
        loads_bounded(json.dumps(nested(MAX_JSON_DEPTH + 1)))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        pytest.param({"a": "x\x00y"}, "NUL", id="nul-in-value"),
        pytest.param({"x\x00": 1}, "NUL", id="nul-in-key"),
        pytest.param([float("nan")], "NaN", id="nan"),
        pytest.param(nested(MAX_JSON_DEPTH + 5), "nested too deeply", id="deep"),
    ],
)
def test_json_problem_names_what_postgresql_cannot_store(value, words):
    problem = json_problem(value)

    assert problem is not None
    assert words in problem


def test_without_nul_replaces_nul_characters_in_keys_and_strings():
    assert without_nul({"a\x00": ["x\x00", 1]}) == {"a\ufffd": ["x\ufffd", 1]}


# --- URLs: every `<id:…>` route -------------------------------------------------------------------
def _routes(patterns: list, prefix: str = "") -> list[str]:
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes += _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            routes.append(prefix + str(pattern.pattern))
    return routes


def test_no_url_uses_django_s_unbounded_int_converter():
    unbounded = [route for route in _routes(get_resolver().url_patterns) if "<int:" in route]

    assert unbounded == []


@pytest.mark.django_db
def test_every_url_answers_404_for_an_id_past_the_database_range(owner, private_project):
    client = APIClient(raise_request_exception=False)
    client.force_login(owner)
    upload_notebook(private_project, owner)
    routes = [route for route in _routes(get_resolver().url_patterns) if "<id:" in route]
    assert len(routes) > 30
    for route in routes:
        url = "/" + re.sub(r"<id:\w+>", BEYOND, route)
        url = url.replace("<slug:slug>", private_project.slug)
        url = re.sub(r"<\w+:\w+>", "x", url)
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 404, (method.__name__, url, response.status_code)


# --- query strings --------------------------------------------------------------------------------
@pytest.fixture
def browser(owner: User) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.force_login(owner)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("number", ["²", "٣", BEYOND, "x"])
def test_a_notebook_page_with_a_bad_version_number_is_404(browser, owner, private_project, number):
    notebook = upload_notebook(private_project, owner).notebook

    response = browser.get(f"/p/{private_project.slug}/notebooks/{notebook.path}", {"v": number})

    assert response.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("number", ["²", BEYOND])
def test_a_dataset_page_with_a_bad_version_number_is_404(browser, owner, private_project, number):
    projects.dataset_create(project=private_project, name="obs", creator=owner)

    response = browser.get(f"/p/{private_project.slug}/datasets/obs/", {"v": number})

    assert response.status_code == 404


@pytest.fixture
def snapshotted_run(owner: User, private_project: Project) -> Run:
    """A run with an environment snapshot, so the diff views get as far as `?against=`."""
    from apps.reproducibility.models import EnvironmentSnapshot

    version = upload_notebook(private_project, owner).version
    run = compute.run_submit(project=private_project, user=owner, notebook_version=version)
    EnvironmentSnapshot.objects.create(
        run=run, attempt=1, data=capture(kernel_name="python3", inputs=[]), fingerprint="x"
    )
    return run


@pytest.mark.django_db
@pytest.mark.parametrize("against", ["²", BEYOND, "", "-3"])
def test_the_environment_diff_api_with_a_bad_against_is_400(client_for, owner, snapshotted_run, against):
    response = client_for(owner).get(f"/api/v1/runs/{snapshotted_run.pk}/environment/diff/", {"against": against})

    assert response.status_code == 400
    assert "against" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("against", ["²", BEYOND])
def test_the_environment_diff_page_with_a_bad_against_is_400(browser, snapshotted_run, against):
    response = browser.get(f"/runs/{snapshotted_run.pk}/environment/diff/", {"against": against})

    assert response.status_code == 400
    assert b"Give the other run" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("after", ["²", BEYOND])
def test_run_events_with_a_bad_after_is_400(client_for, owner, snapshotted_run, after):
    response = client_for(owner).get(f"/api/v1/runs/{snapshotted_run.pk}/events/", {"after": after})

    assert response.status_code == 400
    assert "after" in response.json()["detail"]


# --- JSON bodies ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_json_body_nested_5000_levels_is_400_not_a_recursion_error(client_for, owner, private_project):
    client = client_for(owner)
    client.raise_request_exception = False

    response = client.post(
        "/api/v1/projects/",
        data='{"name": "Deep", "slug": "deep", "description": ' + DEEP + "}",
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    assert not Project.objects.filter(slug="deep").exists()


@pytest.mark.django_db
def test_a_form_encoded_json_field_nested_5000_levels_is_400(client_for, owner, private_project):
    notebook = upload_notebook(private_project, owner).notebook
    client = client_for(owner)
    client.raise_request_exception = False

    response = client.post(
        "/api/v1/runs/", {"project": private_project.slug, "notebook": notebook.pk, "parameters": DEEP}
    )

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_run_parameters_with_a_nul_character_are_400(client_for, owner, private_project):
    notebook = upload_notebook(private_project, owner).notebook

    response = client_for(owner).post(
        "/api/v1/runs/",
        {"project": private_project.slug, "notebook": notebook.pk, "requirements": {"tags": ["gpu\x00"]}},
        format="json",
    )

    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]
    assert not Run.objects.exists()


# --- dataset uploads past DATA_UPLOAD_MAX_NUMBER_FILES --------------------------------------------
def _files(count: int) -> list[io.BytesIO]:
    files = []
    for index in range(count):
        stream = io.BytesIO(f"{index}\n".encode())
        stream.name = f"part-{index}.csv"
        files.append(stream)
    return files


@pytest.mark.django_db
def test_too_many_files_in_a_dataset_upload_is_a_json_413(client_for, owner, private_project, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = settings.REPROLAB_DATASET_MAX_FILES = 3
    projects.dataset_create(project=private_project, name="obs", creator=owner)
    client = client_for(owner)
    client.raise_request_exception = False

    response = client.post(f"/api/v1/projects/{private_project.slug}/datasets/obs/versions/", {"files": _files(4)})

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "at most 3" in response.json()["detail"]
    assert not private_project.datasets.get().versions.exists()


@pytest.mark.django_db
def test_too_many_files_on_the_dataset_page_is_a_readable_413_page(browser, owner, private_project, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = settings.REPROLAB_DATASET_MAX_FILES = 3
    projects.dataset_create(project=private_project, name="obs", creator=owner)
    page = f"/p/{private_project.slug}/datasets/obs/"

    response = browser.post(page, {"data_files": _files(4), "message": ""})

    assert response.status_code == 413
    assert b"Too many files in one upload: at most 3" in response.content
    assert f'href="{page}"'.encode() in response.content
    assert not private_project.datasets.get().versions.exists()


@pytest.mark.django_db
def test_the_files_limit_holds_in_the_serializer_too(client_for, owner, private_project, settings):
    settings.REPROLAB_DATASET_MAX_FILES = 2  # Django's own limit left higher
    projects.dataset_create(project=private_project, name="obs", creator=owner)

    response = client_for(owner).post(
        f"/api/v1/projects/{private_project.slug}/datasets/obs/versions/", {"files": _files(3)}
    )

    assert response.status_code == 400
    assert "At most 2 files" in response.json()["detail"]


# --- WebSockets ------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/runs/None/", f"/ws/runs/{BEYOND}/", "/ws/nothing-here/", "/ws/"])
def test_an_unknown_websocket_path_is_refused_with_4404_and_logs_no_error(path, caplog):
    from config.asgi import application

    async def handshake() -> tuple[bool, int | None]:
        communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1")])
        connected, code = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return connected, code

    with caplog.at_level(logging.WARNING):
        outcome = async_to_sync(handshake)()

    assert outcome == (False, 4404)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
