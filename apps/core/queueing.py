"""Queue Celery tasks without letting a broker outage fail the caller.

The database is the record: whatever a lost task would have done, a beat reconciler (or the
first view) finds and does later. So a failed enqueue is logged through the broker's outage log
(once per outage, not a traceback per task) and otherwise ignored.
"""

from typing import Any

from celery import Task
from django.db import transaction

from .outages import BROKER


def enqueue(task: Task, *args: Any) -> bool:
    """`task.delay(*args)` now; False (logged once per outage) when the broker refused it."""
    try:
        task.delay(*args)
    except Exception as error:  # any broker or transport error: the reconcilers cover it
        BROKER.failed(error, action=f"queue {task.name}{args}")
        return False
    BROKER.succeeded()
    return True


def enqueue_on_commit(task: Task, *args: Any) -> None:
    """Queue `task` once the current transaction commits (nothing if it rolls back)."""
    transaction.on_commit(lambda: enqueue(task, *args))
