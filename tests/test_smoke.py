import pytest

from tests.factories import upload_notebook


@pytest.mark.django_db
def test_notebook_list_answers_with_uploaded_notebook(client_for, owner, private_project):
    upload_notebook(private_project, owner)
    response = client_for(owner).get(f"/api/v1/projects/{private_project.slug}/notebooks/")
    assert response.status_code == 200
    assert [nb["path"] for nb in response.json()["results"]] == ["analysis.ipynb"]
