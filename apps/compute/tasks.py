"""Celery tasks for compute: thin adapters around services."""

from celery import shared_task


@shared_task(name="compute.sweep_expired_leases", time_limit=60, soft_time_limit=50)
def sweep_expired_leases() -> int:
    """The beat-driven reconciler: requeue or settle runs whose lease ran out."""
    from .services import expire_leases

    return expire_leases()
