"""What the schemathesis run found, one behaviour per test: answers that were 500s, errors in
another shape than `{"detail": "..."}`, and schema declarations that disagreed with the API."""

import hashlib

import pytest
from django.core.management import call_command
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from apps.compute import services as compute
from tests.factories import make_project, make_user, upload_notebook


@pytest.fixture
def leased(db):
    """(owner, project, run, claim): a run an agent holds."""
    owner = make_user()
    project = make_project(owner, slug="answers-lab")
    version = upload_notebook(project, owner).version
    run = compute.run_submit(project=project, user=owner, notebook_version=version)
    node = compute.node_register(owner=owner, name="n1", projects=[project]).node
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    return owner, project, run, claim


def _put(run, claim, url: str, body: bytes):
    return APIClient().put(
        url,
        body,
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Bearer {claim.run_token}",
        HTTP_X_LEASE_ID=claim.lease_id,
        HTTP_X_CONTENT_SHA256=hashlib.sha256(body).hexdigest(),
    )


def test_deleting_a_project_that_has_runs_is_409_and_keeps_it(client_for, leased):
    owner, project, _, _ = leased
    response = client_for(owner).delete(f"/api/v1/projects/{project.slug}/")
    assert response.status_code == 409
    assert "runs" in response.json()["detail"]
    assert client_for(owner).get(f"/api/v1/projects/{project.slug}/").status_code == 200


def test_deleting_a_project_without_runs_still_works(client_for, db):
    owner = make_user()
    make_project(owner, slug="short-lived")
    assert client_for(owner).delete("/api/v1/projects/short-lived/").status_code == 204


def test_an_empty_artifact_upload_is_an_empty_file(leased):
    _, _, run, claim = leased
    response = _put(run, claim, f"/api/v1/agent/runs/{run.pk}/artifacts/empty.txt", b"")
    assert response.status_code == 200, response.content
    assert response.json()["size"] == 0


def test_an_empty_output_upload_is_a_4xx(leased):
    _, _, run, claim = leased
    response = _put(run, claim, f"/api/v1/agent/runs/{run.pk}/output/", b"")
    assert 400 <= response.status_code < 500
    assert isinstance(response.json()["detail"], str)


def test_an_api_path_that_matches_no_route_answers_json(db):
    response = Client().get("/api/v1/projects/some-lab/notebooks/not-a-number/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]


def test_a_site_page_that_does_not_exist_keeps_the_html_404(db):
    response = Client().get("/no-such-page/here/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_error_given_as_a_bare_list_answers_with_a_detail_string(client_for, leased):
    owner, project, _, _ = leased
    response = client_for(owner).get(f"/api/v1/projects/{project.slug}/members/", {"search": "a\x00b"})
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


# --- the schema says what the API does ---------------------------------------------------------------
@pytest.fixture(scope="module")
def openapi() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _response(openapi: dict, path: str, method: str, code: str) -> dict:
    return openapi["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]


def test_notifications_are_documented_as_the_list_they_are(openapi):
    schema = _response(openapi, "/api/v1/notifications/", "get", "200")
    assert schema["type"] == "array"


def test_publications_are_documented_as_a_page(openapi):
    schema = _response(openapi, "/api/v1/publications/", "get", "200")
    assert schema["$ref"].endswith("/PaginatedPublicationList")


def test_a_dataset_without_versions_is_documented_as_having_none(openapi):
    latest = openapi["components"]["schemas"]["Dataset"]["properties"]["latest_version"]
    assert latest.get("nullable") is True or {"type": "null"} in latest.get("oneOf", []) + latest.get("anyOf", [])


def test_every_operation_documents_its_errors_in_the_one_error_shape(openapi):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            codes = {code for code in operation["responses"] if code >= "400"}
            assert {"401", "503"} <= codes, (method, path)
            for code in codes:
                content = operation["responses"][code].get("content", {})
                assert content, f"{method} {path} {code}: no body documented"
                schema = content["application/json"]["schema"]
                if "$ref" in schema:
                    schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
                assert schema["properties"]["detail"]["type"] == "string", (method, path, code)
                assert "detail" in schema["required"], (method, path, code)


def test_the_schema_is_valid_openapi_and_generates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
