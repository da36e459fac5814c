import pytest

from tests.factories import upload_notebook


@pytest.mark.django_db
def test_notebook_list_answers_with_uploaded_notebook(client_for, owner, private_project):
    upload_notebook(private_project, owner)
    response = client_for(owner).get(f"/api/v1/projects/{private_project.slug}/notebooks/")
    assert response.status_code == 200
    assert [nb["path"] for nb in response.json()["results"]] == ["analysis.ipynb"]


@pytest.mark.django_db
def test_oversized_body_is_refused_before_csrf_parses_it(client, owner, private_project, settings):
    """A session (browser) upload over every limit is answered 413 before the form is read."""
    from django.http import HttpResponse

    from apps.core.middleware import RequestSizeLimitMiddleware
    from apps.core.uploads import MULTIPART_OVERHEAD

    client.force_login(owner)
    limit = max(settings.REPROLAB_NOTEBOOK_MAX_BYTES, settings.REPROLAB_DATASET_UPLOAD_MAX_BYTES)
    assert RequestSizeLimitMiddleware(lambda request: HttpResponse()).limit == limit
    response = client.generic(
        "POST",
        f"/p/{private_project.slug}/-/upload/",
        b"x",
        content_type="multipart/form-data; boundary=zzz",
        CONTENT_LENGTH=str(limit + MULTIPART_OVERHEAD + 1),
    )
    assert response.status_code == 413
    assert "largest upload accepted" in response.json()["detail"]
    assert not private_project.notebooks.exists()
