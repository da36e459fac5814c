"""Small steps of the lease protocol through the service layer, shared by the compute tests."""

import datetime as dt
import hashlib
import io

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node, Run, RunEvent, RunState
from apps.projects.models import NotebookVersion, Project

OUTPUT = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def submit(project: Project, version: NotebookVersion, user: User | None = None, **kwargs) -> Run:
    creator = user or project.created_by
    assert creator is not None
    return services.run_submit(project=project, user=creator, notebook_version=version, **kwargs)


def last_event(run: Run) -> RunEvent:
    event = run.events.last()
    assert event is not None
    return event


def node(owner: User, name: str = "box", *, seen: bool = True, **kwargs) -> Node:
    registered = services.node_register(owner=owner, name=name, **kwargs).node
    if seen:
        services.node_seen(node=registered)
    return registered


def claim(n: Node) -> services.Claim:
    result = services.run_claim(node=n)
    assert result is not None, f"{n.name} claimed nothing"
    return result


def upload(run: Run, lease_id: str, data: bytes = OUTPUT) -> None:
    services.run_output_upload(
        run=run, lease_id=lease_id, stream=io.BytesIO(data), sha256=hashlib.sha256(data).hexdigest()
    )


def succeed(c: services.Claim) -> Run:
    upload(c.run, c.lease_id)
    return services.run_complete(run=c.run, lease_id=c.lease_id, state=RunState.SUCCEEDED)


def expire(run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))


def messages(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " ".join(exc.value.messages)
