"""A real Celery worker, fed through Redis, pre-renders a new notebook version."""

import subprocess
import sys

import pytest
from django.core.files.storage import default_storage

from apps.projects import rendering
from tests.factories import make_project, make_user, upload_notebook

from .servers import ROOT, celery_worker, server_env, wait_until

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


def test_upload_succeeds_when_broker_is_down(transactional_db):
    """Redis down loses nothing: the upload is stored; only the pre-render is skipped. A separate
    process whose broker is an address where nothing listens does the upload."""
    owner = make_user()
    project = make_project(owner)
    code = (
        "from apps.accounts.models import User; from apps.projects.models import Project;"
        "from tests.factories import upload_notebook;"
        f"u = upload_notebook(Project.objects.get(pk={project.pk}), User.objects.get(pk={owner.pk}));"
        "print('created', u.created, u.version.number)"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server_env(REDIS_URL="redis://127.0.0.1:1/0", REPROLAB_PRERENDER="true"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "created True 1" in result.stdout
    # The broker really was unreachable, and the outage was logged (once) as such.
    assert "Celery broker unavailable" in result.stderr
    assert "queue projects.prerender_notebook_version" in result.stderr
    assert project.notebooks.values_list("latest_version__number", flat=True).get() == 1
