"""Property-based tests of the whole REST API against its own OpenAPI schema (schemathesis).

Every operation of /api/schema/ is called in-process through Django's WSGI handler, with a
real credential, a bounded number of examples, and the checks that matter: no server error,
a documented status code, content type and headers, and a body that conforms to the schema.
Half of the examples point their path parameters (and the ids and slugs in their bodies) at
real objects of a small world (tests/api/world.py), so the fuzzer gets past the 404s.
Each operation is called with the credential its security names: the owner's personal token,
the reviewer's for /reviews/, the node token for agent/hello and the live run's run token for
the agent's run endpoints (so those reach their lease checks, not only 401). Both positive and
negative (schema-violating) cases are generated; a negative case must get a documented 4xx.

The world is built once for the module inside one transaction; each operation's test runs in
a savepoint of it (pytest-django's `db`), so what one operation deletes or changes does not
leak into the next, and all of it is rolled back at the end."""

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import notebook_bytes

from .world import World, build_world

MAX_EXAMPLES = 15

schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:
    """The world, in a transaction that stays open for the module and is rolled back after it.
    Django's handler closes "obsolete" connections around each request (one inside a
    transaction counts as obsolete); the test client turns that off, and so do we."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            built = build_world()
        except BaseException:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
            raise
    try:
        yield built
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def credential_for(path: str, world: World) -> str | None:
    """The token an operation is meant to be called with (see the schema's security)."""
    if path == "/api/v1/auth/token/":
        return None  # a password login: no token
    if path == "/api/v1/agent/hello/":
        return world.node_token
    if path.startswith("/api/v1/agent/runs/"):
        return world.run_token  # valid only for the live run's endpoints, while its lease lives
    if path.startswith("/api/v1/reviews/"):
        return world.reviewer_token  # the reviewer answers, submits, reruns and comments
    return world.owner_token


def real_path_parameters(method: str, path: str, world: World) -> dict[str, Any]:
    by_resource = {
        "/api/v1/nodes/": world.node.pk,
        "/api/v1/runs/": world.finished_run.pk,
        "/api/v1/tokens/": world.extra["spare_token_id"],
    }
    values: dict[str, Any] = {
        "slug": world.project.slug,
        "notebook_id": world.notebook.pk,
        "number": 1,
        "name": world.dataset.name,
        "username": world.member.username,
        "run_id": world.live_run.pk if path.startswith("/api/v1/agent/") else world.finished_run.pk,
        "sha256": world.dataset_file_sha256,
        "path": "out/result.txt",
        "publication_id": world.publication_version.publication_id,
        "review_id": world.review.pk,
        "comment_id": world.comment.pk,
        "reproduction_id": world.reproduction_id,
    }
    for prefix, pk in by_resource.items():
        if path.startswith(prefix):
            values["id"] = pk
    if path == "/api/v1/runs/{id}/cancel/":
        values["id"] = world.extra["queued_run_id"]  # the finished run can only answer "already ended"
    if (method, path) == ("DELETE", "/api/v1/projects/{slug}/"):
        values["slug"] = world.extra["empty_project"]  # the world's project has runs: always 409
    return values


def real_query(path: str, world: World) -> dict[str, Any]:
    if path.endswith("/download/") and "/datasets/" in path:
        return {"path": world.dataset_file}
    if path.endswith("/artifact/"):
        return {"path": world.artifact_path}
    if path.endswith("/environment/diff/"):
        return {"against": world.finished_run.pk}
    return {}


def real_body(path: str, world: World) -> dict[str, Any]:
    values: dict[str, Any] = {
        "project": world.project.slug,
        "notebook": world.notebook.pk,
        "run": world.finished_run.pk,
        "notebook_version": world.version.pk,
        "lease_id": world.lease_id,
        "license": "CC-BY-4.0",
        "depends_on": [world.finished_run.pk],
        "parent": world.comment.pk,
        "version": 1,
        "projects": [world.project.slug],
        "reviewer": world.extra["guest"],
        "username": world.owner.username if path == "/api/v1/auth/token/" else world.extra["guest"],
        "password": world.extra["password"],
        "authors": [{"given_names": "Ada", "family_names": "Lovelace"}],
    }
    if path == "/api/v1/projects/{slug}/notebooks/":
        values.update(file=notebook_bytes(source="print(7 * 6)"), path="fuzz/new.ipynb")
    if path == "/api/v1/runs/":
        values["datasets"] = [{"name": world.dataset.name, "version": 1}]
    elif path.startswith("/api/v1/publications/"):
        values["datasets"] = [world.dataset_version.pk]
    return values


def point_at_world(case: schemathesis.Case, world: World) -> dict[str, str]:
    """Aim the case's path parameters, query and body at the world's objects; returns the
    headers a raw upload needs to reach past its checks."""
    path, method = case.operation.path, case.method.upper()
    real = real_path_parameters(method, path, world)
    case.path_parameters = {name: real.get(name, value) for name, value in (case.path_parameters or {}).items()}
    if case.query is not None or real_query(path, world):
        case.query = {**(case.query or {}), **real_query(path, world)}
    if isinstance(case.body, dict):
        body = real_body(path, world)
        case.body = {key: body.get(key, value) for key, value in case.body.items()}
        if path == "/api/v1/projects/{slug}/notebooks/":  # a notebook, at a notebook's path
            case.body.update(file=body["file"], path=body["path"])
        files = case.body.get("files")
        if isinstance(files, list):  # one distinct path per uploaded file
            case.body["paths"] = [f"fuzz/part-{i}.csv" for i in range(len(files))]
    if path == "/api/v1/agent/runs/{run_id}/output/":
        case.body = notebook_bytes()  # an executed notebook, as an agent sends it
    if path.startswith("/api/v1/agent/runs/") and method == "PUT":
        # A raw upload under the live lease, with the sha256 of what is sent.
        sent = case.body if isinstance(case.body, bytes) else str(case.body or "").encode()
        return {"X-Lease-Id": world.lease_id, "X-Content-SHA256": hashlib.sha256(sent).hexdigest()}
    return {}


@schema.parametrize()
@schema.given(aim_at_world=st.booleans())
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: the world changes as examples run (a DELETE stays deleted until the test
    # ends), so a shrunk example would not replay the same; the first failing one is reported.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_honours_its_schema(case: schemathesis.Case, aim_at_world: bool, world: World, db) -> None:
    headers = point_at_world(case, world) if aim_at_world else {}
    token = credential_for(case.operation.path, world)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    case.call_and_validate(headers=headers, checks=CHECKS)


# --- nothing escapes the fuzzer ------------------------------------------------------------------------
def _api_routes(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[str]:
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _api_routes(entry, route)
        elif isinstance(entry, URLPattern) and route.startswith("api/v1/"):
            yield route


# Not a DRF view, so not in the schema: the agent's long-poll claim is a plain async Django view
# (it holds no worker while it waits). Its 401/400/204/200 answers are tested in tests/compute.
NOT_IN_SCHEMA = {"api/v1/agent/claim/"}


def test_every_api_route_is_in_the_schema() -> None:
    documented = {path.lstrip("/") for path in schema.raw_schema["paths"]}
    routes = set(_api_routes())
    normalised = {_placeholders(route) for route in routes}
    missing = normalised - {_placeholders(p) for p in documented} - NOT_IN_SCHEMA
    assert not missing, f"API routes missing from the OpenAPI schema (so never fuzzed): {sorted(missing)}"


def test_the_fuzzer_covers_every_operation_of_the_schema() -> None:
    methods = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
    declared = sum(1 for item in schema.raw_schema["paths"].values() for method in item if method in methods)
    loaded = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded), "schemathesis could not load some operations"
    assert len(loaded) == declared
    assert declared >= 74  # what the schema had when this test was written; it only grows


def _placeholders(route: str) -> str:
    """`projects/<slug:slug>/`, `^nodes/(?P<pk>[^/.]+)/$` (a router's) and `projects/{slug}/`
    -> `projects/{}/`."""
    route = re.sub(r"\(\?P<\w+>[^)]*\)|<[^>]+>|\{[^}]+\}", "{}", route)
    return route.replace("^", "").replace("$", "")
