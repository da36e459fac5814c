"""Writes for nodes and runs, by responsibility:

- `nodes`: registering nodes, their tokens, what their agents report (hello);
- `runs`: submitting and cancelling runs, and settling a run in a final state;
- `events`: numbering, storing and broadcasting a run's events;
- `claims`: a node claiming work (the scheduler's plan, applied);
- `leases`: what an agent does under its lease (heartbeat, events, complete, release) and the
  reconciler of expired leases;
- `uploads`: the output notebook and artifacts an agent uploads under its lease.

Callers use the names re-exported here (`services.run_submit(...)`).
"""

from .claims import Claim, run_claim
from .events import AGENT_EVENT_KINDS, event_message, run_group
from .leases import (
    COMPLETION_STATES,
    RELEASE_INFRASTRUCTURE,
    RELEASE_REASONS,
    RELEASE_SHUTDOWN,
    RUN_TOKEN_PREFIX,
    HeartbeatReply,
    StaleLease,
    expire_leases,
    locked_with_lease,
    run_authenticate,
    run_complete,
    run_events_append,
    run_heartbeat,
    run_release,
)
from .nodes import (
    NODE_TOKEN_PREFIX,
    RegisteredNode,
    node_authenticate,
    node_register,
    node_revoke,
    node_rotate_token,
    node_seen,
)
from .runs import run_cancel, run_submit
from .uploads import run_artifact_upload, run_output_upload

__all__ = [
    "AGENT_EVENT_KINDS",
    "COMPLETION_STATES",
    "NODE_TOKEN_PREFIX",
    "RELEASE_INFRASTRUCTURE",
    "RELEASE_REASONS",
    "RELEASE_SHUTDOWN",
    "RUN_TOKEN_PREFIX",
    "Claim",
    "HeartbeatReply",
    "RegisteredNode",
    "StaleLease",
    "event_message",
    "expire_leases",
    "locked_with_lease",
    "node_authenticate",
    "node_register",
    "node_revoke",
    "node_rotate_token",
    "node_seen",
    "run_artifact_upload",
    "run_authenticate",
    "run_cancel",
    "run_claim",
    "run_complete",
    "run_events_append",
    "run_group",
    "run_heartbeat",
    "run_output_upload",
    "run_release",
    "run_submit",
]
