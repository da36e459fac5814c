"""A run's events: numbered per run, stored, and broadcast to its viewers after commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprolab_agent import protocol

from apps.core.broadcast import broadcast_on_commit

from ..models import Run, RunEvent

# What an agent may send (POST .../events/); the site records `state` and `cancel_requested` itself.
AGENT_EVENT_KINDS = protocol.AGENT_EVENT_KINDS


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def event_message(event: RunEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "attempt": event.attempt,
        "kind": event.kind,
        "cell_index": event.cell_index,
        "payload": event.payload,
        "created_at": event.created_at.isoformat() if event.created_at else None,
    }


def append_server_event(run: Run, kind: str, payload: dict[str, Any], cell_index: int | None = None) -> None:
    append_events(run, [{"kind": kind, "payload": payload, "cell_index": cell_index}])


def append_state_event(run: Run, state: str, **payload: Any) -> None:
    append_server_event(run, protocol.STATE, {"state": state, **payload})


def append_events(run: Run, events: Sequence[dict[str, Any]]) -> list[RunEvent]:
    """Number and store events for a run locked by the caller, then broadcast after commit."""
    rows = []
    seq = Run.objects.filter(pk=run.pk).values_list("last_event_seq", flat=True).get()
    for event in events:
        seq += 1
        rows.append(
            RunEvent(
                run=run,
                seq=seq,
                attempt=run.attempt,
                agent_seq=event.get("agent_seq"),
                kind=event["kind"],
                cell_index=event.get("cell_index"),
                payload=event.get("payload") or {},
            )
        )
    if not rows:
        return []
    RunEvent.objects.bulk_create(rows)
    Run.objects.filter(pk=run.pk).update(last_event_seq=seq)
    run.last_event_seq = seq
    for row in rows:
        broadcast_on_commit(run_group(run.pk), "run.event", event_message(row))
    return rows
