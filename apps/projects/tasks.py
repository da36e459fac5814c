"""Celery tasks: thin adapters that take ids and call services."""

from celery import shared_task
from django.conf import settings

from apps.core.queueing import enqueue_on_commit


@shared_task(name="projects.prerender_notebook_version", time_limit=120, soft_time_limit=100)
def prerender_notebook_version(version_id: int) -> bool:
    """Render a new version ahead of the first visit. Returns whether a render is available."""
    from .models import NotebookVersion
    from .rendering import render_version

    version = NotebookVersion.objects.filter(pk=version_id).first()
    if version is None:  # deleted since: nothing to do
        return False
    return render_version(version).html is not None


def enqueue_prerender(version_id: int) -> None:
    """Queue a pre-render after commit, when a worker exists (REPROLAB_PRERENDER).

    A broker outage must not fail the upload: the page renders on first view anyway."""
    if settings.REPROLAB_PRERENDER:
        enqueue_on_commit(prerender_notebook_version, version_id)
