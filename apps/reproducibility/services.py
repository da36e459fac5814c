from typing import Any

from django.db import transaction

from apps.compute.models import Run
from apps.compute.services import locked_with_lease

from .diff import fingerprint
from .models import EnvironmentSnapshot


def environment_record(*, run: Run, lease_id: str, data: dict[str, Any]) -> EnvironmentSnapshot:
    """Store the snapshot of the run's current attempt (a retried run replaces the earlier one:
    the environment that counts is the one its result came from)."""
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        snapshot, _ = EnvironmentSnapshot.objects.update_or_create(
            run=run, defaults={"attempt": run.attempt, "data": data, "fingerprint": fingerprint(data)}
        )
    return snapshot
