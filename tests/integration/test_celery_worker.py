"""A real Celery worker, fed through Redis, pre-renders a new notebook version."""

import pytest
from django.core.files.storage import default_storage

from apps.projects import rendering
from tests.factories import make_project, make_user, upload_notebook

from .servers import celery_worker, wait_until

pytestmark = pytest.mark.integration


def test_worker_prerenders_uploaded_version(require_redis, transactional_db, settings):
    settings.REPROLAB_PRERENDER = True
    owner = make_user()
    project = make_project(owner, visibility="private")
    with celery_worker():
        upload = upload_notebook(project, owner, source="print('rendered by the worker')")
        rendered = rendering._render_name(upload.version.sha256)
        wait_until(lambda: default_storage.exists(rendered), timeout=60, what="pre-render by the worker")
    with default_storage.open(rendered) as stored:
        assert b"rendered by the worker" in stored.read()


def test_upload_succeeds_when_broker_is_down(transactional_db, settings, caplog):
    """Redis down loses nothing: the upload is stored; only the pre-render is skipped."""
    from config.celery import app

    def use_broker(url: str) -> None:
        # The producer pool keeps connections to the old broker: drop it so the URL takes effect.
        app.conf["broker_url"] = url
        pool = app._pool  # type: ignore[attr-defined]  # celery has no public way to drop it
        if pool is not None:
            pool.force_close_all()
            app._pool = None  # type: ignore[attr-defined]

    settings.REPROLAB_PRERENDER = True
    original = app.conf.broker_url
    use_broker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        owner = make_user()
        project = make_project(owner)
        upload = upload_notebook(project, owner)
    finally:
        use_broker(original)
    assert upload.created
    assert "Could not queue the pre-render" in caplog.text  # the broker really was unreachable
    assert project.notebooks.get().latest_version == upload.version
