"""Lineage: graph, PROV-JSON and the SVG picture of a small DAG."""

import xml.etree.ElementTree as ET

import pytest

from apps.compute import services as compute
from apps.projects.models import Role
from tests.factories import make_project, make_user, upload_notebook

from .test_reproductions import executed, finish


@pytest.fixture
def dag(db):
    owner = make_user()
    project = make_project(owner, slug="dag-lab", members={make_user("dag-viewer"): Role.VIEWER})
    version = upload_notebook(project, owner).version
    node = compute.node_register(owner=owner, name="dag-node").node
    first = compute.run_submit(project=project, user=owner, notebook_version=version, parameters={"alpha": 1.0})
    finish(first, node, output=executed("one\n"))
    second = compute.run_submit(
        project=project,
        user=owner,
        notebook_version=version,
        parameters={"alpha": 2.0, "steps": 3},
        depends_on=[first],
    )
    return owner, first, second


def test_lineage_graph_links_inputs_runs_and_outputs(client_for, dag):
    owner, first, second = dag
    response = client_for(owner).get(f"/api/v1/runs/{second.pk}/lineage/")
    assert response.status_code == 200
    graph = response.json()
    ids = {n["id"] for n in graph["nodes"]}
    assert {f"run:{first.pk}", f"run:{second.pk}"} <= ids
    edges = {(e["source"], e["target"], e["relation"]) for e in graph["edges"]}
    assert (f"run:{first.pk}", f"run:{second.pk}", "wasInformedBy") in edges
    first.refresh_from_db()
    assert (f"run:{first.pk}", f"output:{first.output_sha256}", "wasGeneratedBy") in edges
    notebook = f"notebook:{first.notebook_version.sha256}"
    assert (notebook, f"run:{second.pk}", "used") in edges


def test_lineage_exports_prov_json(client_for, dag):
    owner, first, second = dag
    prov = client_for(owner).get(f"/api/v1/runs/{second.pk}/lineage/?as=prov").json()
    assert f"reprolab:run:{second.pk}" in prov["activity"]
    assert any(u["prov:activity"] == f"reprolab:run:{second.pk}" for u in prov["used"].values())
    assert any(i["prov:informant"] == f"reprolab:run:{first.pk}" for i in prov["wasInformedBy"].values())
    assert prov["prefix"]["prov"] == "http://www.w3.org/ns/prov#"


def test_lineage_picture_is_well_formed_svg_with_escaped_labels(client, dag):
    owner, first, _ = dag
    first.parameters = {"label": "</text><script>alert(1)</script>"}
    first.save(update_fields=["parameters"])
    client.force_login(owner)
    response = client.get(f"/runs/{first.pk}/lineage.svg")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert "default-src 'none'" in response["Content-Security-Policy"]
    svg = ET.fromstring(response.content)  # noqa: S314 - our own output; it must parse despite the hostile label
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert not svg.findall(".//{http://www.w3.org/2000/svg}script")
    texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert f"run #{first.pk}" in texts


def test_lineage_is_404_for_outsiders(client_for, client, dag):
    _, first, _ = dag
    outsider = make_user()
    assert client_for(outsider).get(f"/api/v1/runs/{first.pk}/lineage/").status_code == 404
    client.force_login(outsider)
    assert client.get(f"/runs/{first.pk}/lineage.svg").status_code == 404
