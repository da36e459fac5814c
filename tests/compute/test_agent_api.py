"""The HTTP side of compute: the agent protocol (node token -> hello and claim; run token ->
heartbeat, events, output, complete) and the users' run API, through Django's test client."""

import base64
import hashlib
import uuid

import pytest
from reprolab_agent import protocol
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node, Run, RunEvent, RunState
from apps.projects.models import Notebook, Project

from ..factories import upload_notebook

# The claim view is async: its database work runs through channels' database_sync_to_async,
# which closes connections left inside a transaction, so these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)

OUTPUT = b'{"cells": [], "metadata": {"executed": true}, "nbformat": 4, "nbformat_minor": 5}'
SHA = hashlib.sha256(OUTPUT).hexdigest()


# --- helpers ----------------------------------------------------------------------------------------
@pytest.fixture
def project(private_project: Project) -> Project:
    return private_project


@pytest.fixture
def notebook(project: Project, owner: User) -> Notebook:
    return upload_notebook(project, owner).notebook


def submit(project: Project, notebook: Notebook, user: User | None = None, **kwargs) -> Run:
    creator = user or project.created_by
    assert creator is not None
    assert notebook.latest_version is not None
    return services.run_submit(project=project, user=creator, notebook_version=notebook.latest_version, **kwargs)


def run_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def do_claim(agent: APIClient) -> dict:
    response = agent.post("/api/v1/agent/claim/?wait=0")
    assert response.status_code == 200, response.content
    return response.json()


def put_output(client: APIClient, claimed: dict, data: bytes = OUTPUT, sha256: str = SHA):
    return client.put(
        claimed["urls"]["output"],
        data=data,
        content_type="application/octet-stream",
        HTTP_X_LEASE_ID=claimed["lease"]["id"],
        HTTP_X_CONTENT_SHA256=sha256,
    )


# --- hello -----------------------------------------------------------------------------------------------
class TestHello:
    def test_hello_stores_capabilities_and_marks_the_node_seen(self, agent, registered, settings):
        capabilities = {"cpus": 16, "memory_mb": 131072, "gpus": [{"name": "H200", "memory_mb": 143771}]}
        response = agent.post("/api/v1/agent/hello/", {"capabilities": capabilities}, format="json")
        assert response.status_code == 200
        assert response.json() == {
            "node": "box",
            "heartbeat_seconds": settings.REPROLAB_HEARTBEAT_SECONDS,
            "claim_wait_seconds": settings.REPROLAB_CLAIM_MAX_WAIT_SECONDS,
        }
        node = Node.objects.get(pk=registered.node.pk)
        assert node.capabilities == capabilities
        assert node.last_seen_at is not None

    def test_capabilities_must_be_an_object(self, agent):
        response = agent.post("/api/v1/agent/hello/", {"capabilities": [1]}, format="json")
        assert response.status_code == 400
        assert "capabilities" in response.json()

    @pytest.mark.parametrize("token", [None, "rln_not-a-real-token", "rl_a-user-token-shape", "revoked"])
    def test_a_missing_bad_or_revoked_node_token_is_401(self, registered, token):
        client = APIClient()
        if token == "revoked":
            services.node_revoke(node=registered.node)
            token = registered.token
        if token:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        response = client.post("/api/v1/agent/hello/", {"capabilities": {}}, format="json")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Bearer"
        assert Node.objects.get(pk=registered.node.pk).capabilities == {}


# --- claim -----------------------------------------------------------------------------------------------
class TestClaim:
    def test_nothing_queued_is_204(self, agent, registered):
        response = agent.post("/api/v1/agent/claim/?wait=0")
        assert response.status_code == 204
        assert response.content == b""
        assert Node.objects.get(pk=registered.node.pk).last_seen_at is not None  # polling counts as seen

    def test_a_queued_run_is_handed_out_with_its_lease_token_and_urls(self, agent, project, notebook, settings):
        run = submit(project, notebook, parameters={"alpha": 0.1})
        body = do_claim(agent)
        assert set(body) == {"run", "lease", "run_token", "heartbeat_seconds", "urls"}
        version = notebook.latest_version
        assert version is not None
        # A small notebook comes with the claim: no round trip before the run starts.
        inline = base64.b64decode(body["run"].pop("notebook_inline"))
        assert hashlib.sha256(inline).hexdigest() == version.sha256
        assert body["run"] == {
            "id": run.pk,
            "attempt": 1,
            "project": project.slug,
            "notebook_path": "analysis.ipynb",
            "notebook_sha256": version.sha256,
            "kernel_name": "python3",
            "parameters": {"alpha": 0.1},
            "timeout_seconds": 3600,
            "kind": "notebook",
            "files": [],
            "requirements": {
                "tags": [],
                "gpu": False,
                "gpus": 0,
                "min_gpu_memory_mb": 0,
                "isolation": None,
                "network": False,
            },
            "environment": None,  # nothing declared: the node's base environment
        }
        run.refresh_from_db()
        assert run.state == RunState.LEASED
        assert body["lease"]["id"] == str(run.lease_id)
        assert body["run_token"].startswith("rlr_")
        assert body["heartbeat_seconds"] == settings.REPROLAB_HEARTBEAT_SECONDS
        base = f"http://testserver/api/v1/agent/runs/{run.pk}"
        assert body["urls"] == {
            "notebook": f"{base}/notebook/",
            "heartbeat": f"{base}/heartbeat/",
            "events": f"{base}/events/",
            "output": f"{base}/output/",
            "complete": f"{base}/complete/",
            "release": f"{base}/release/",
            "environment": f"{base}/environment/",
            "artifacts": f"{base}/artifacts/",
        }
        # The run token fetches the notebook to execute.
        notebook_response = run_client(body["run_token"]).get(body["urls"]["notebook"])
        assert notebook_response.status_code == 200
        assert notebook_response["X-Content-SHA256"] == version.sha256
        assert hashlib.sha256(notebook_response.getvalue()).hexdigest() == version.sha256

    def test_a_big_notebook_is_fetched_not_sent_with_the_claim(self, agent, project, owner):
        source = "x = 1  # " + "pad " * (protocol.NOTEBOOK_INLINE_MAX_BYTES // 4)
        big = upload_notebook(project, owner, "big.ipynb", source=source).notebook
        submit(project, big)
        body = do_claim(agent)
        assert "notebook_inline" not in body["run"]
        fetched = run_client(body["run_token"]).get(body["urls"]["notebook"])
        assert hashlib.sha256(fetched.getvalue()).hexdigest() == body["run"]["notebook_sha256"]

    def test_the_claim_carries_the_runs_requirements_for_the_agent(self, agent, project, notebook):
        """The agent picks `gpus` devices of `min_gpu_memory_mb` each, and gives the run the
        network only when `network` is true."""
        gpus = [{"index": i, "memory_total_mb": 81559} for i in range(2)]
        capabilities = {"gpus": gpus, "isolation": "bwrap", "network": True}
        assert agent.post("/api/v1/agent/hello/", {"capabilities": capabilities}, format="json").status_code == 200
        requirements = {"gpus": 2, "min_gpu_memory_mb": 40000, "isolation": "sandbox", "network": True}
        submit(project, notebook, requirements={**requirements, "tags": []})
        assert do_claim(agent)["run"]["requirements"] == {**requirements, "tags": [], "gpu": True}

    def test_the_claim_of_a_run_stored_before_gpus_existed_has_every_requirement(self, agent, project, notebook):
        gpus = [{"index": 0, "memory_total_mb": 16000}]
        assert agent.post("/api/v1/agent/hello/", {"capabilities": {"gpus": gpus}}, format="json").status_code == 200
        run = submit(project, notebook)
        Run.objects.filter(pk=run.pk).update(requirements={"tags": [], "gpu": True, "min_gpu_memory_mb": 8000})
        assert do_claim(agent)["run"]["requirements"] == {
            "tags": [],
            "gpu": True,
            "gpus": 1,
            "min_gpu_memory_mb": 8000,
            "isolation": None,
            "network": False,
        }

    def test_claim_needs_a_valid_node_token_and_post(self, agent, registered, project, notebook):
        submit(project, notebook)
        assert APIClient().post("/api/v1/agent/claim/?wait=0").status_code == 401
        assert run_client("rln_bogus").post("/api/v1/agent/claim/?wait=0").status_code == 401
        assert agent.get("/api/v1/agent/claim/").status_code == 405
        assert agent.post("/api/v1/agent/claim/?wait=soon").status_code == 400
        services.node_revoke(node=registered.node)
        assert agent.post("/api/v1/agent/claim/?wait=0").status_code == 401
        assert Run.objects.get().state == RunState.QUEUED


# --- the run-token endpoints --------------------------------------------------------------------------------
class TestRunToken:
    def test_the_whole_protocol(self, agent, project, notebook):
        run = submit(project, notebook)
        claimed = do_claim(agent)
        client = run_client(claimed["run_token"])
        lease = claimed["lease"]["id"]

        response = client.post(claimed["urls"]["heartbeat"], {"lease_id": lease, "running": True}, format="json")
        assert response.status_code == 200
        assert response.json()["cancel_requested"] is False
        run.refresh_from_db()
        assert run.state == RunState.RUNNING

        batch = {
            "lease_id": lease,
            "events": [
                {"seq": 1, "kind": "cell_started", "cell_index": 0},
                {"seq": 2, "kind": "stream", "cell_index": 0, "payload": {"name": "stdout", "text": "hi\n"}},
            ],
        }
        response = client.post(claimed["urls"]["events"], batch, format="json")
        assert (response.status_code, response.json()) == (200, {"stored": 2, "received": 2})
        response = client.post(claimed["urls"]["events"], batch, format="json")  # a resend after a timeout
        assert (response.status_code, response.json()) == (200, {"stored": 0, "received": 2})
        assert RunEvent.objects.filter(run=run, agent_seq__isnull=False).count() == 2

        response = put_output(client, claimed)
        assert (response.status_code, response.json()) == (200, {"sha256": SHA, "size": len(OUTPUT)})

        response = client.post(claimed["urls"]["complete"], {"lease_id": lease, "state": "succeeded"}, format="json")
        assert (response.status_code, response.json()) == (200, {"state": "succeeded"})
        run.refresh_from_db()
        assert (run.state, run.output_sha256, run.output_size) == (RunState.SUCCEEDED, SHA, len(OUTPUT))

        # The lease ended with the run: its token no longer works anywhere.
        response = client.post(claimed["urls"]["heartbeat"], {"lease_id": lease}, format="json")
        assert response.status_code == 401
        assert (
            client.post(claimed["urls"]["complete"], {"lease_id": lease, "state": "failed"}, format="json").status_code
            == 401
        )

    def test_heartbeat_carries_the_cancel_request(self, agent, project, notebook, owner, client_for):
        run = submit(project, notebook)
        claimed = do_claim(agent)
        assert client_for(owner).post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 200
        response = run_client(claimed["run_token"]).post(
            claimed["urls"]["heartbeat"], {"lease_id": claimed["lease"]["id"]}, format="json"
        )
        assert response.status_code == 200
        assert response.json()["cancel_requested"] is True

    def test_an_output_with_a_wrong_sha256_or_no_headers_is_400(self, agent, project, notebook):
        run = submit(project, notebook)
        claimed = do_claim(agent)
        client = run_client(claimed["run_token"])
        response = put_output(client, claimed, sha256=hashlib.sha256(b"something else").hexdigest())
        assert response.status_code == 400
        assert "resend it" in str(response.json())
        response = client.put(claimed["urls"]["output"], data=OUTPUT, content_type="application/octet-stream")
        assert response.status_code == 400
        assert "X-Lease-Id" in response.json()["detail"]
        run.refresh_from_db()
        assert run.pending_output == {}
        response = client.post(
            claimed["urls"]["complete"], {"lease_id": claimed["lease"]["id"], "state": "succeeded"}, format="json"
        )
        assert response.status_code == 400
        assert "Upload the output notebook" in response.json()["detail"]

    def test_a_stale_lease_id_is_409(self, agent, project, notebook):
        run = submit(project, notebook)
        claimed = do_claim(agent)
        client = run_client(claimed["run_token"])
        stale = str(uuid.uuid4())
        urls = claimed["urls"]
        assert client.post(urls["heartbeat"], {"lease_id": stale}, format="json").status_code == 409
        events = {"lease_id": stale, "events": [{"seq": 1, "kind": "log", "payload": {"m": 1}}]}
        assert client.post(urls["events"], events, format="json").status_code == 409
        assert put_output(client, {**claimed, "lease": {"id": stale}}).status_code == 409
        response = client.post(urls["complete"], {"lease_id": stale, "state": "failed"}, format="json")
        assert response.status_code == 409
        assert "is not held under lease" in response.json()["detail"]
        run.refresh_from_db()
        assert run.state == RunState.LEASED
        assert not run.events.filter(kind="log").exists()

    def test_a_run_token_is_good_for_its_own_run_only(self, agent, project, notebook):
        submit(project, notebook)
        submit(project, notebook)
        first, second = do_claim(agent), do_claim(agent)
        assert first["run"]["id"] != second["run"]["id"]
        # The first run's token on the second run's URL.
        response = run_client(first["run_token"]).post(
            second["urls"]["heartbeat"], {"lease_id": second["lease"]["id"]}, format="json"
        )
        assert response.status_code == 403
        assert "another run" in response.json()["detail"]

    def test_no_or_a_bad_token_is_401(self, agent, project, notebook, registered):
        submit(project, notebook)
        claimed = do_claim(agent)
        body = {"lease_id": claimed["lease"]["id"]}
        assert APIClient().post(claimed["urls"]["heartbeat"], body, format="json").status_code == 401
        assert run_client("rlr_bogus").post(claimed["urls"]["heartbeat"], body, format="json").status_code == 401
        # A node token is not a run token.
        assert run_client(registered.token).post(claimed["urls"]["heartbeat"], body, format="json").status_code == 401


# --- the users' run API -------------------------------------------------------------------------------------
class TestRunApi:
    def test_submit_and_read_back(self, client_for, owner, project, notebook):
        response = client_for(owner).post(
            "/api/v1/runs/",
            {"project": project.slug, "notebook": notebook.pk, "parameters": {"alpha": 1, "steps": 2}, "priority": 3},
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert (body["state"], body["parameters"], body["priority"], body["version"]) == (
            "queued",
            {"alpha": 1, "steps": 2},
            3,
            1,
        )
        listed = client_for(owner).get("/api/v1/runs/").json()
        assert [r["id"] for r in listed["results"]] == [body["id"]]

    def test_bad_parameters_are_400_naming_the_parameter(self, client_for, owner, project, notebook):
        response = client_for(owner).post(
            "/api/v1/runs/",
            {"project": project.slug, "notebook": notebook.pk, "parameters": {"steps": "ten"}},
            format="json",
        )
        assert response.status_code == 400
        assert "'steps' must be an integer" in response.json()["detail"]
        assert response.json()["parameters"] == ["'steps' must be an integer (declared int), got str."]
        response = client_for(owner).post(
            "/api/v1/runs/",
            {"project": project.slug, "notebook": notebook.pk, "parameters": {"gamma": 1}},
            format="json",
        )
        assert response.status_code == 400
        assert "'gamma' is not a parameter of this notebook" in response.json()["detail"]
        assert not Run.objects.exists()

    def test_bad_requirements_are_400(self, client_for, owner, project, notebook):
        response = client_for(owner).post(
            "/api/v1/runs/",
            {"project": project.slug, "notebook": notebook.pk, "requirements": {"gpu": "maybe"}},
            format="json",
        )
        assert response.status_code == 400
        assert "requirements.gpu must be true or false." in response.json()["detail"]

    def test_a_viewer_may_not_submit(self, client_for, team, project, notebook):
        response = client_for(team["viewer"]).post(
            "/api/v1/runs/", {"project": project.slug, "notebook": notebook.pk}, format="json"
        )
        assert response.status_code == 403
        assert not Run.objects.exists()

    def test_an_outsider_gets_404_for_a_private_project(self, client_for, team, project, notebook):
        outsider = client_for(team["outsider"])
        response = outsider.post("/api/v1/runs/", {"project": project.slug, "notebook": notebook.pk}, format="json")
        assert response.status_code == 404
        run = submit(project, notebook)
        assert outsider.get(f"/api/v1/runs/{run.pk}/").status_code == 404
        assert outsider.get(f"/api/v1/runs/{run.pk}/events/").status_code == 404
        assert outsider.post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 404
        assert outsider.get("/api/v1/runs/").json()["results"] == []
        # A viewer sees it.
        assert client_for(team["viewer"]).get(f"/api/v1/runs/{run.pk}/").status_code == 200

    def test_events_after_a_seq(self, client_for, owner, agent, project, notebook):
        run = submit(project, notebook)
        claimed = do_claim(agent)
        events = {
            "lease_id": claimed["lease"]["id"],
            "events": [{"seq": i, "kind": "log", "payload": {"i": i}} for i in (1, 2, 3)],
        }
        assert (
            run_client(claimed["run_token"]).post(claimed["urls"]["events"], events, format="json").status_code == 200
        )
        api = client_for(owner)
        everything = api.get(f"/api/v1/runs/{run.pk}/events/").json()["results"]
        assert [e["seq"] for e in everything] == [1, 2, 3, 4, 5, 6]  # queued, leased, running, three logs
        later = api.get(f"/api/v1/runs/{run.pk}/events/?after=4").json()["results"]
        assert [(e["seq"], e["kind"], e["payload"]) for e in later] == [(5, "log", {"i": 2}), (6, "log", {"i": 3})]
        assert api.get(f"/api/v1/runs/{run.pk}/events/?after=6").json()["results"] == []
        assert api.get(f"/api/v1/runs/{run.pk}/events/?after=x").status_code == 400

    def test_cancel(self, client_for, team, owner, project, notebook):
        run = submit(project, notebook)
        assert client_for(team["viewer"]).post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 403
        response = client_for(team["member"]).post(f"/api/v1/runs/{run.pk}/cancel/")
        assert response.status_code == 200
        assert response.json()["state"] == "cancelled"
        response = client_for(owner).post(f"/api/v1/runs/{run.pk}/cancel/")
        assert response.status_code == 400
        assert "already ended" in response.json()["detail"]

    def test_output_download_404_before_completion_then_the_exact_bytes(
        self, client_for, owner, agent, project, notebook
    ):
        run = submit(project, notebook)
        claimed = do_claim(agent)
        api = client_for(owner)
        assert api.get(f"/api/v1/runs/{run.pk}/output/").status_code == 404
        client = run_client(claimed["run_token"])
        assert put_output(client, claimed).status_code == 200
        assert api.get(f"/api/v1/runs/{run.pk}/output/").status_code == 404  # uploaded, not yet accepted
        lease = claimed["lease"]["id"]
        assert (
            client.post(
                claimed["urls"]["complete"], {"lease_id": lease, "state": "succeeded"}, format="json"
            ).status_code
            == 200
        )
        response = api.get(f"/api/v1/runs/{run.pk}/output/")
        assert response.status_code == 200
        assert response.getvalue() == OUTPUT
        assert response["X-Content-SHA256"] == SHA
        assert response["Content-Type"] == "application/x-ipynb+json"
        detail = api.get(f"/api/v1/runs/{run.pk}/").json()
        assert detail["output"] == {
            "sha256": SHA,
            "size": len(OUTPUT),
            "download_url": f"/api/v1/runs/{run.pk}/output/",
        }
