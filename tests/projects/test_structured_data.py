"""schema.org JSON-LD on public project and notebook pages, safe against hostile text."""

import json
import re

import pytest

from apps.projects import services
from tests.factories import make_project, make_user, upload_notebook

LD = re.compile(r'<script type="application/ld\+json">(.*?)</script>', re.S)


def ld_blocks(html: str) -> list[dict]:
    return [json.loads(block) for block in LD.findall(html)]


@pytest.fixture
def public_lab(db):
    owner = make_user("ada")
    project = make_project(owner, slug="open-science", visibility="public")
    services.project_update(
        project=project, name="Open </script><script>alert(1)</script> science", license="CC-BY-4.0"
    )
    upload = upload_notebook(project, owner, "fit.ipynb")
    return project, upload


def test_public_notebook_page_describes_the_notebook(client, public_lab):
    project, upload = public_lab
    html = client.get(f"/p/{project.slug}/notebooks/fit.ipynb").content.decode()
    [data] = ld_blocks(html)
    assert data["@context"] == "https://schema.org"
    assert data["@type"] == "SoftwareSourceCode"
    assert data["identifier"] == f"sha256:{upload.version.sha256}"
    assert data["license"] == "https://spdx.org/licenses/CC-BY-4.0"
    assert data["encodingFormat"] == "application/x-ipynb+json"
    assert 50 <= len(data["description"]) <= 5000
    assert data["distribution"]["contentUrl"].endswith(f"/-/download/{upload.version.pk}/")
    assert data["creator"] == {"@type": "Person", "name": "ada"}


def test_public_project_page_is_a_dataset_with_its_notebooks(client, public_lab):
    project, _ = public_lab
    [data] = ld_blocks(client.get(f"/p/{project.slug}/").content.decode())
    assert data["@type"] == "Dataset"
    assert data["name"] == project.name
    assert [part["name"] for part in data["hasPart"]] == ["fit.ipynb"]
    assert data["creator"] == [{"@type": "Person", "name": "ada"}]


def test_hostile_names_cannot_close_the_script_element(client, public_lab):
    project, _ = public_lab
    html = client.get(f"/p/{project.slug}/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "\\u003C/script\\u003E" in html  # escaped inside the JSON-LD
    assert ld_blocks(html)[0]["name"].startswith("Open </script>")  # and intact once parsed


def test_private_pages_carry_no_structured_data(client, db):
    owner = make_user()
    project = make_project(owner, slug="closed", visibility="private")
    upload_notebook(project, owner, "secret.ipynb")
    client.force_login(owner)
    assert ld_blocks(client.get(f"/p/{project.slug}/").content.decode()) == []
    assert ld_blocks(client.get(f"/p/{project.slug}/notebooks/secret.ipynb").content.decode()) == []
