"""DataCite metadata for notebook versions validates against the DataCite JSON schema."""

import pytest
from datacite import schema45

from apps.projects import services
from tests.factories import make_project, make_user, upload_notebook


@pytest.fixture
def version(db):
    owner = make_user("grace")
    project = make_project(owner, slug="cite-lab", visibility="public")
    services.project_update(project=project, license="CC-BY-4.0", description="Climate <b>model</b> runs.")
    return project, upload_notebook(project, owner, "climate.ipynb").version


def test_datacite_json_validates_and_says_computational_notebook(client_for, version):
    project, notebook_version = version
    url = f"/api/v1/projects/{project.slug}/notebooks/{notebook_version.notebook_id}/versions/1/datacite/"
    response = client_for(None).get(url)
    assert response.status_code == 200
    data = response.json()
    assert schema45.validate(data)
    assert data["types"]["resourceTypeGeneral"] == "ComputationalNotebook"
    assert data["creators"] == [{"name": "grace", "nameType": "Personal"}]
    assert {"alternateIdentifier": f"sha256:{notebook_version.sha256}", "alternateIdentifierType": "sha256"} in data[
        "alternateIdentifiers"
    ]
    assert data["rightsList"][0]["rightsIdentifier"] == "CC-BY-4.0"


def test_a_broken_record_does_not_validate(client_for, version):
    project, notebook_version = version
    url = f"/api/v1/projects/{project.slug}/notebooks/{notebook_version.notebook_id}/versions/1/datacite/"
    data = client_for(None).get(url).json()
    data["types"]["resourceTypeGeneral"] = "Notebook"  # not in the vocabulary
    assert not schema45.validate(data)


def test_datacite_of_a_private_notebook_is_404_for_outsiders(client_for, db):
    owner = make_user()
    project = make_project(owner, slug="hidden-cite")
    upload = upload_notebook(project, owner)
    url = f"/api/v1/projects/{project.slug}/notebooks/{upload.notebook.pk}/versions/1/datacite/"
    assert client_for(make_user()).get(url).status_code == 404
    assert client_for(owner).get(url).status_code == 200
