"""Live project events (new notebook and dataset versions) for the project page."""

from typing import Any

from apps.core.broadcast import broadcast_on_commit


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def broadcast_project_event(project_id: int, event_type: str, payload: dict[str, Any]) -> None:
    broadcast_on_commit(project_group(project_id), event_type, payload)
