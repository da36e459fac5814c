import pytest

from apps.compute import services as compute
from tests.factories import make_project, make_user, upload_notebook


@pytest.fixture
def leased_run(db):
    """A queued run claimed by a node: (owner, run, claim), as an agent holds it."""
    owner = make_user()
    project = make_project(owner, slug="env-lab")
    version = upload_notebook(project, owner).version
    run = compute.run_submit(project=project, user=owner, notebook_version=version)
    node = compute.node_register(owner=owner, name="n1").node
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    return owner, run, claim
