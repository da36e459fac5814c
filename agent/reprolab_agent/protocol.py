"""The agent protocol, spelled once: run states, event kinds, HTTP headers, the keys of the claim
payload, release reasons, isolation levels and run requirements.

Both sides import this module: the agent package, and the site (which installs the package), so
a name changed here changes on both ends. Standard library only; Python 3.10 compatible.
"""

from __future__ import annotations

from typing import Final

# --- run states -----------------------------------------------------------------------------------
QUEUED: Final = "queued"
LEASED: Final = "leased"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
LOST: Final = "lost"
ACTIVE_STATES: Final = (LEASED, RUNNING)
FINAL_STATES: Final = (SUCCEEDED, FAILED, CANCELLED, LOST)
# What an agent may report when it completes a run (lost is the site's verdict, never the node's).
COMPLETION_STATES: Final = (SUCCEEDED, FAILED, CANCELLED)

# --- events an agent sends (POST .../events/) --------------------------------------------------------
CELL_STARTED: Final = "cell_started"
CELL_EXECUTED: Final = "cell_executed"
STREAM: Final = "stream"
OUTPUT: Final = "output"
RESOURCES: Final = "resources"
LOG: Final = "log"
GRADE: Final = "grade"  # a grading run: what the agent saw of one test cell (see COMPLETE_GRADING)
AGENT_EVENT_KINDS: Final = frozenset({CELL_STARTED, CELL_EXECUTED, STREAM, OUTPUT, RESOURCES, LOG, GRADE})
# ...and what the site records itself.
STATE: Final = "state"
CANCEL_REQUESTED: Final = "cancel_requested"

# --- HTTP headers of the raw uploads (output notebook, artifacts) ------------------------------------
HEADER_LEASE_ID: Final = "X-Lease-Id"
HEADER_SHA256: Final = "X-Content-SHA256"
HEADER_REFERENCE_COMPARISON: Final = "X-Reference-Comparison"

# --- the claim payload ---------------------------------------------------------------------------------
# Top level: {"run": {...}, "lease": {"id", "expires_at"}, "run_token", "heartbeat_seconds",
#             "urls": {...}, "reference": {...} (reruns of a reproduction check only)}
CLAIM_RUN: Final = "run"
CLAIM_LEASE: Final = "lease"
CLAIM_RUN_TOKEN: Final = "run_token"  # noqa: S105 - a key name, not a secret
CLAIM_HEARTBEAT_SECONDS: Final = "heartbeat_seconds"
CLAIM_URLS: Final = "urls"
CLAIM_REFERENCE: Final = "reference"
# Inside the claim's run: the requirements (every key of REQUIREMENT_KEYS present), and the
# notebook itself (base64) when it is small, saving the agent a round trip before the run starts.
RUN_REQUIREMENTS: Final = "requirements"
RUN_NOTEBOOK_INLINE: Final = "notebook_inline"
# The run's declared environment: {"sha256", "lock", "layered", "python_version",
# "requires_python", "packages"} (the lock text is the file uv installs from), or absent/None:
# the node's base environment.
RUN_ENVIRONMENT: Final = "environment"
# What the run is: a notebook to execute (papermill), or a submitted notebook to grade
# (reprolab_agent.grading), with RUN_GRADING {"cell_timeout": seconds}. A site older than kinds
# sends neither: a notebook run.
RUN_KIND: Final = "kind"
KIND_NOTEBOOK: Final = "notebook"
KIND_GRADING: Final = "grading"
RUN_KINDS: Final = (KIND_NOTEBOOK, KIND_GRADING)
RUN_GRADING: Final = "grading"
# A grading run's completion (POST .../complete/) carries what the agent observed of each test
# cell, from outside the student's kernel: {"cells": [GRADE payloads], "finished": bool}, where
# `finished` says every cell was executed (false: the run was stopped, or its kernel died).
COMPLETE_GRADING: Final = "grading"
# Where a grading run's feedback notebook goes: an artifact of this name (the students' view,
# executed without hidden tests).
FEEDBACK_ARTIFACT: Final = "feedback.ipynb"
# Names in a run's working directory that are the agent's (the notebook, its output, the kernel's
# sockets, the run's temporary folder): no input file may take them (the site refuses such runs).
NOTEBOOK_FILE: Final = "_input.ipynb"
OUTPUT_FILE: Final = "_output.ipynb"
KERNEL_FOLDER: Final = ".kernel"
TMP_FOLDER: Final = ".tmp"
RESERVED_RUN_NAMES: Final = (NOTEBOOK_FILE, OUTPUT_FILE, KERNEL_FOLDER, TMP_FOLDER)
NOTEBOOK_INLINE_MAX_BYTES: Final = 256 * 1024
# The URLs a claim names, by key: each is one endpoint of the run, authenticated by the run token.
URL_NOTEBOOK: Final = "notebook"
URL_HEARTBEAT: Final = "heartbeat"
URL_EVENTS: Final = "events"
URL_OUTPUT: Final = "output"
URL_COMPLETE: Final = "complete"
URL_RELEASE: Final = "release"
URL_ENVIRONMENT: Final = "environment"
URL_ARTIFACTS: Final = "artifacts"  # a prefix: the artifact's relative path is appended
RUN_URLS: Final = (
    URL_NOTEBOOK,
    URL_HEARTBEAT,
    URL_EVENTS,
    URL_OUTPUT,
    URL_COMPLETE,
    URL_RELEASE,
    URL_ENVIRONMENT,
    URL_ARTIFACTS,
)

# --- releasing a run (POST .../release/) ----------------------------------------------------------------
RELEASE_SHUTDOWN: Final = "shutdown"  # the agent is stopping: costs the run no attempt (up to a cap)
RELEASE_INFRASTRUCTURE: Final = "infrastructure"  # the node could not run it: costs an attempt

# --- isolation -----------------------------------------------------------------------------------------
# What a node's agent reports as `isolation` in its capabilities, weakest first.
ISOLATION_NONE: Final = "none"  # runs as the agent's user
ISOLATION_UID: Final = "uid"  # a per-run uid; resource limits; no namespaces
ISOLATION_BWRAP: Final = "bwrap"  # bubblewrap namespaces (mount, PID, IPC, network), limits
ISOLATION_LEVELS: Final = (ISOLATION_NONE, ISOLATION_UID, ISOLATION_BWRAP)
# What a run may require (`requirements.isolation`) and the weakest node level that satisfies it.
REQUIRED_ISOLATION: Final = {
    "none": ISOLATION_NONE,
    "limits": ISOLATION_UID,  # its own uid and resource limits, not necessarily namespaces
    "sandbox": ISOLATION_BWRAP,  # namespaces: no view of the node, no network unless allowed
}


def isolation_satisfies(level: object, required: str | None) -> bool:
    """Whether a node reporting `level` may take a run requiring `required` (None: anything).
    An unknown or missing level counts as none."""
    if not required:
        return True
    needed = REQUIRED_ISOLATION.get(required)
    if needed is None:
        return False
    have = level if level in ISOLATION_LEVELS else ISOLATION_NONE
    return ISOLATION_LEVELS.index(have) >= ISOLATION_LEVELS.index(needed)


# --- run requirements (POST /api/v1/runs/ `requirements`) --------------------------------------------
REQ_TAGS: Final = "tags"
REQ_GPU: Final = "gpu"  # at least one GPU (kept: `gpus` says how many)
REQ_GPUS: Final = "gpus"  # how many GPUs of the node the run gets for itself
REQ_MIN_GPU_MEMORY_MB: Final = "min_gpu_memory_mb"
REQ_ISOLATION: Final = "isolation"  # a key of REQUIRED_ISOLATION
REQ_NETWORK: Final = "network"  # the run needs network access (only nodes that allow it)
REQUIREMENT_KEYS: Final = (REQ_TAGS, REQ_GPU, REQ_GPUS, REQ_MIN_GPU_MEMORY_MB, REQ_ISOLATION, REQ_NETWORK)

# --- node capabilities (POST /api/v1/agent/hello/ `capabilities`), beside the probed hardware ----------
CAP_ISOLATION: Final = "isolation"  # one of ISOLATION_LEVELS
CAP_NETWORK: Final = "network"  # True: the owner lets runs that ask for it reach the network
CAP_GPU_SHARING: Final = "gpu_sharing"  # True: runs may share a GPU
CAP_CONCURRENCY: Final = "concurrency"
CAP_WARM_KERNELS: Final = "warm_kernels"  # the kernels the warm pool holds ready, e.g. ["python3"]
CAP_ENVIRONMENTS: Final = "environments"  # True: the agent builds declared environments (it has uv)
CAP_RUN_KINDS: Final = "run_kinds"  # the RUN_KINDS it runs (absent: notebook runs only)
CAP_PYTHON: Final = "python_version"  # the Python its environments are built on, e.g. "3.11.7"
CAP_LIMITS: Final = "limits"  # the node's per-run resource limits (memory_mb, processes, ...)


def python_misfit(version: object, *, minimum: str, requires_python: str = "") -> str | None:
    """Why an environment resolved for Python `minimum` (and the declaration's requires-python)
    cannot be built on a node whose Python is `version`; None when it can."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        have = Version(str(version))
        # A lock is resolved for one Python (its wheels and markers): the same minor version.
        if minimum and have.release[:2] != Version(minimum).release[:2]:
            return f"the environment was resolved for Python {minimum}; this node runs Python {have}"
        if requires_python and not SpecifierSet(requires_python).contains(have, prereleases=True):
            return f"the environment requires Python {requires_python}; this node runs Python {have}"
    except (InvalidVersion, InvalidSpecifier):
        return f"cannot compare this node's Python {str(version)[:40]!r} with the environment's"
    return None
