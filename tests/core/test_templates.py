"""Pages built from stored JSON (environment snapshots) render whatever keys the JSON lacks: a
template filter argument that does not resolve raises in Django, unlike a plain variable."""

from django.test import Client

from apps.compute import services as compute
from apps.reproducibility.diff import fingerprint
from apps.reproducibility.models import EnvironmentSnapshot
from tests.factories import upload_notebook


def test_environment_page_of_a_snapshot_without_a_kernel_renders(private_project):
    owner = private_project.created_by
    version = upload_notebook(private_project, owner).version
    run = compute.run_submit(project=private_project, user=owner, notebook_version=version)
    data = {"python": {"version": "3.11.9"}, "packages": {"numpy": "1.26.4"}, "os": {"system": "Linux"}}
    EnvironmentSnapshot.objects.create(run=run, attempt=1, data=data, fingerprint=fingerprint(data))
    client = Client()
    client.force_login(owner)

    response = client.get(f"/runs/{run.pk}/environment/")

    assert response.status_code == 200
    assert "numpy" in response.content.decode()
