"""Redis going away under the site, for real: a private redis-server killed mid-use. Claims fall
back to polling the database, broadcasts and enqueues log the outage once (and its end), and a
live-event socket is closed so the client reconnects, without a traceback per message."""

import asyncio
import logging
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import AsyncClient
from kombu.exceptions import OperationalError as BrokerError

from apps.compute import services as compute
from apps.compute.models import Run
from apps.core import queueing
from apps.core.broadcast import broadcast
from apps.core.consumers import TRY_AGAIN_LATER_CLOSE_CODE
from apps.reproducibility.tasks import build_run_report
from config.asgi import application
from tests.factories import make_project, make_user, upload_notebook
from tests.integration.servers import wait_until

from .conftest import PrivateRedis


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def waiting_in_receive(redis: PrivateRedis) -> bool:
    """True once some client is blocked in the layer's receive (BZPOPMIN) on this Redis."""
    return any(client.get("cmd") == "bzpopmin" for client in redis.client().client_list())


def submit_in_thread(project, owner, version) -> Run:
    try:
        return compute.run_submit(project=project, user=owner, notebook_version=version)
    finally:
        connection.close()  # this thread's own connection; left open it blocks the test database's teardown


@pytest.mark.django_db(transaction=True)
def test_a_waiting_claim_survives_redis_dropping_and_answers_from_the_database(layer_on_private_redis):
    owner = make_user("claimer")
    project = make_project(owner, slug="outage-lab")
    version = upload_notebook(project, owner).version
    registered = compute.node_register(owner=owner, name="n1")

    async def scenario() -> tuple[int, dict, float]:
        client = AsyncClient()
        claim = asyncio.ensure_future(
            client.post(
                "/api/v1/agent/claim/?wait=10",
                data={},
                content_type="application/json",
                headers={"Authorization": f"Bearer {registered.token}"},
            )
        )
        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(waiting_in_receive, layer_on_private_redis):
            assert time.monotonic() < deadline, "the claim never waited on the channel layer"
            assert not claim.done(), claim.result()
            await asyncio.sleep(0.02)
        layer_on_private_redis.kill()  # mid-wait
        # From a thread of its own, as another request would: the test's main thread serves the claim.
        submitted = await asyncio.to_thread(submit_in_thread, project, owner, version)
        started = time.monotonic()
        response = await asyncio.wait_for(claim, timeout=8)
        assert submitted.pk == response.json()["run"]["id"]
        return response.status_code, response.json(), time.monotonic() - started

    status, body, waited = async_to_sync(scenario)()

    assert status == 200
    assert Run.objects.get(pk=body["run"]["id"]).state == "leased"
    assert waited < 3  # the database poll found it, not the end of the 10 s wait


@pytest.mark.django_db
def test_a_redis_outage_is_logged_once_and_its_end_once(layer_on_private_redis, caplog):
    caplog.set_level(logging.DEBUG, logger="apps.core.outages")
    assert broadcast("run.1", "run.event", {"seq": 1})
    layer_on_private_redis.kill()

    delivered = [broadcast("run.1", "run.event", {"seq": seq}) for seq in range(2, 52)]

    assert delivered == [False] * 50
    outage = warnings_from(caplog)
    assert len(outage) == 1
    assert "Channel layer unavailable" in outage[0]
    assert "broadcast run.event to run.1" in outage[0]
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)  # no tracebacks

    caplog.clear()
    layer_on_private_redis.start()
    assert broadcast("run.1", "run.event", {"seq": 52})
    assert broadcast("run.1", "run.event", {"seq": 53})
    back = warnings_from(caplog)
    assert len(back) == 1
    assert back[0].lower().startswith("channel layer back")
    assert "50 failed attempts" in back[0]


@pytest.mark.django_db
def test_a_refused_enqueue_is_logged_once_per_broker_outage(monkeypatch, caplog):
    def broker_down(*args):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(build_run_report, "delay", broker_down)  # the broker is the edge of the world here

    assert [queueing.enqueue(build_run_report, run_id) for run_id in range(1, 31)] == [False] * 30
    outage = warnings_from(caplog)
    assert len(outage) == 1
    assert "Celery broker unavailable" in outage[0]
    assert "reproducibility.build_run_report" in outage[0]

    caplog.clear()
    monkeypatch.setattr(build_run_report, "delay", lambda *args: None)
    assert queueing.enqueue(build_run_report, 31)
    assert [m.lower().startswith("celery broker back") for m in warnings_from(caplog)] == [True]


@pytest.mark.django_db
def test_every_enqueue_of_the_site_logs_a_broker_outage_once(
    monkeypatch, caplog, settings, django_capture_on_commit_callbacks
):
    """Pre-renders, reports, invitation and notification e-mails: each path that queues a task
    goes through apps.core.queueing, so a broker outage is one warning, not a traceback per call."""
    from apps.projects.tasks import enqueue_prerender, prerender_notebook_version
    from apps.reproducibility.services import queue_report
    from apps.review.notifications import notify
    from apps.review.tasks import send_notification_emails, send_reviewer_invitation

    def broker_down(*args):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    tasks = (prerender_notebook_version, build_run_report, send_notification_emails, send_reviewer_invitation)
    for task in tasks:
        monkeypatch.setattr(task, "delay", broker_down)
    settings.REPROLAB_PRERENDER = True
    people = [make_user(f"reader{i}") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for n in range(3):
            enqueue_prerender(n + 1)
            queue_report(n + 1)
            notify(people, kind="test", message=lambda user: "hello", url="/", actor=None)
            queueing.enqueue_on_commit(send_reviewer_invitation, n + 1)
    assert len(callbacks) == 9  # three after-commit enqueues per round: nothing was sent early
    outage = warnings_from(caplog)
    assert len(outage) == 1, outage
    assert "Celery broker unavailable" in outage[0]
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.django_db(transaction=True)
def test_a_live_socket_is_closed_for_a_reconnect_when_redis_drops(layer_on_private_redis, caplog):
    owner = make_user("viewer")
    project = make_project(owner, slug="socket-lab", visibility="public")
    run = compute.run_submit(project=project, user=owner, notebook_version=upload_notebook(project, owner).version)

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(
            application, f"/ws/runs/{run.pk}/", headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
        )
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await asyncio.to_thread(
            wait_until, lambda: waiting_in_receive(layer_on_private_redis), timeout=5, what="the socket's receive"
        )
        layer_on_private_redis.kill()
        closed = await communicator.receive_output(timeout=5)
        await communicator.wait(timeout=5)  # the consumer ended, it did not crash
        return closed

    closed = async_to_sync(scenario)()

    assert closed == {"type": "websocket.close", "code": TRY_AGAIN_LATER_CLOSE_CODE}
    outage = warnings_from(caplog)
    assert len(outage) == 1
    assert "serve a live-event socket" in outage[0]


@pytest.mark.django_db(transaction=True)
def test_leaving_the_group_on_a_dead_redis_does_not_hold_the_socket(layer_on_private_redis):
    owner = make_user("leaver")
    project = make_project(owner, slug="leave-lab", visibility="public")
    run = compute.run_submit(project=project, user=owner, notebook_version=upload_notebook(project, owner).version)

    async def scenario() -> float:
        communicator = WebsocketCommunicator(
            application, f"/ws/runs/{run.pk}/", headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
        )
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        layer_on_private_redis.kill()
        started = time.monotonic()
        await communicator.disconnect(timeout=5)  # raises if the consumer is still running after 5 s
        return time.monotonic() - started

    assert async_to_sync(scenario)() < 3
