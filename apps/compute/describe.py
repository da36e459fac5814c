"""Node capabilities and run requirements in words, for the compute pages.

Both are stored JSON written by others (an agent's hello, a run's submitter, older versions of
either), so every reader here takes any shape and answers None, [] or "unknown" for what it
cannot read: a page never fails on one node's odd report. Everything returned is plain text for
Django's autoescaping; nothing here is marked safe. Requirements are read by
`requirements.read_requirements`, as the scheduler reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reprolab_agent import protocol

from .requirements import read_requirements

UNKNOWN = "unknown"
MAX_LISTED = 20  # warm kernels, tags: a page shows this many and counts the rest


def text(value: Any) -> str | None:
    """A scalar as text; None for anything else (lists, dicts, booleans, "")."""
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "" else None


def _number(value: Any) -> int | float | None:
    """A number a page can say (booleans and absurd magnitudes are not); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > 1e15:
        return None
    return value


def _plain(number: int | float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _gib(mb: int | float) -> str:
    return f"{mb / 1024:.1f}".removesuffix(".0") + " GiB"


def gib(mb: Any) -> str | None:
    """Reported megabytes in GiB; None when not a positive number."""
    number = _number(mb)
    return _gib(number) if number is not None and number > 0 else None


def megabytes(mb: int | float) -> str:
    return _gib(mb) if mb >= 1024 else f"{_plain(mb)} MiB"


def seconds(total: int | float) -> str:
    whole = int(total)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or f"{total:g} s"


def _names(value: Any) -> list[str] | None:
    """A list of names (warm kernels, tags): its non-empty strings; None when not a list."""
    if not isinstance(value, list):
        return None
    names = [item for item in value if isinstance(item, str) and item.strip()]
    if len(names) > MAX_LISTED:
        names = [*names[:MAX_LISTED], f"and {len(names) - MAX_LISTED} more"]
    return names


# --- nodes -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Isolation:
    """How a node isolates its runs (reprolab_agent.sandbox), for people."""

    level: str  # bwrap | uid | none | unknown (also the CSS class)
    short: str  # the node list
    words: str  # the node page

    @property
    def warn(self) -> bool:
        return self.level == protocol.ISOLATION_NONE


ISOLATION = {
    protocol.ISOLATION_BWRAP: Isolation(
        protocol.ISOLATION_BWRAP, "sandboxed", "sandboxed: bubblewrap namespaces, no network unless allowed"
    ),
    protocol.ISOLATION_UID: Isolation(protocol.ISOLATION_UID, "per-run user", "per-run user and limits"),
    protocol.ISOLATION_NONE: Isolation(
        protocol.ISOLATION_NONE, "not isolated", "none: runs can read what the agent's user can"
    ),
}
UNKNOWN_ISOLATION = Isolation(UNKNOWN, "isolation unknown", "unknown (not reported by this agent)")

# Per-run limits a node enforces: key, label on the node page, and how the list page says it.
LIMITS = (
    ("memory_mb", "Memory", megabytes, "{} memory"),
    ("cpu_seconds", "CPU time", seconds, "{} CPU time"),
    ("processes", "Processes", _plain, "{} processes"),
    ("output_mb", "Output", megabytes, "{} output"),
    ("workdir_mb", "Working folder", megabytes, "{} working folder"),
)


@dataclass
class Gpu:
    index: str | None
    name: str
    memory: str | None
    compute_capability: str | None
    cuda: str | None
    cupy: str | None


@dataclass
class NodeCapabilities:
    """What a node's agent reported, as its pages say it."""

    cpus: str | None = None
    memory: str | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)  # host, system, Python, agent
    gpus: list[Gpu] = field(default_factory=list)
    gpu_error: str | None = None
    gpu_sharing: str | None = None  # None: not reported
    isolation: Isolation = UNKNOWN_ISOLATION
    network: str = UNKNOWN
    network_allowed: bool | None = None
    warm_kernels: list[str] | None = None  # None: not reported (or unreadable)
    limits: list[tuple[str, str]] = field(default_factory=list)  # every limit, "no limit" where unset
    limits_note: str | None = None  # instead of `limits`: "unknown", or "none" when nothing is limited
    limits_short: list[str] = field(default_factory=list)  # the limits that are set, for the list

    @property
    def summary(self) -> str:
        gpus = [g.name + (f" ({g.memory})" if g.memory else "") for g in self.gpus]
        parts = [self.cpus, self.memory, ", ".join(gpus) if gpus else "no GPU"]
        return " · ".join(p for p in parts if p)


def _cpus(caps: dict[str, Any]) -> str | None:
    cpus, total = text(caps.get("cpu_count")), text(caps.get("cpu_count_total"))
    if not cpus:
        return None
    if total and cpus != total:
        return f"{cpus} of {total} CPUs"
    return f"{cpus} CPU{'' if cpus == '1' and not total else 's'}"


def _gpu(gpu: dict[str, Any]) -> Gpu:
    cuda = [
        f"{label} {version}"
        for label, key in (("runtime", "cuda_runtime_version"), ("driver", "cuda_driver_version"))
        if (version := text(gpu.get(key)))
    ]
    return Gpu(
        index=text(gpu.get("index")),
        name=text(gpu.get("name")) or "GPU",
        memory=gib(gpu.get("memory_total_mb", gpu.get("memory_mb"))),
        compute_capability=text(gpu.get("compute_capability")),
        cuda=", ".join(cuda) or None,
        cupy=text(gpu.get("cupy_version")),
    )


def _facts(caps: dict[str, Any]) -> list[tuple[str, str]]:
    reported = caps.get("platform")
    platform: dict[str, Any] = reported if isinstance(reported, dict) else {}
    system = " ".join(filter(None, (text(platform.get("system")), text(platform.get("machine")))))
    python = " ".join(filter(None, (text(caps.get("python_implementation")), text(caps.get("python_version")))))
    facts = (
        ("Host", text(caps.get("hostname"))),
        ("System", system),
        ("Python", python),
        ("Agent", text(caps.get("agent_version"))),
    )
    return [(label, value) for label, value in facts if value]


def _limits(into: NodeCapabilities, reported: Any) -> None:
    if not isinstance(reported, dict):
        into.limits_note = UNKNOWN
        return
    for key, label, say, short in LIMITS:
        value = reported.get(key)
        number = _number(value)
        if value is None or number == 0:
            into.limits.append((label, "no limit"))
        elif number is None or number < 0:
            into.limits.append((label, UNKNOWN))
        else:
            into.limits.append((label, say(number)))
            into.limits_short.append(short.format(say(number)))
    if all(value == "no limit" for _, value in into.limits):
        into.limits, into.limits_note = [], "none"


def node_capabilities(caps: Any) -> NodeCapabilities:
    """Read an agent's capabilities report, whatever its shape."""
    if not isinstance(caps, dict):
        caps = {}
    described = NodeCapabilities(cpus=_cpus(caps), memory=gib(caps.get("memory_total_mb")), facts=_facts(caps))
    gpus = caps.get("gpus")
    described.gpus = [_gpu(g) for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []
    described.gpu_error = text(caps.get("gpu_error"))
    sharing = caps.get(protocol.CAP_GPU_SHARING)
    if isinstance(sharing, bool):
        described.gpu_sharing = "runs may share a GPU" if sharing else "one run per GPU"
    isolation = caps.get(protocol.CAP_ISOLATION)
    described.isolation = (
        ISOLATION.get(isolation, UNKNOWN_ISOLATION) if isinstance(isolation, str) else UNKNOWN_ISOLATION
    )
    network = caps.get(protocol.CAP_NETWORK)
    if isinstance(network, bool):
        described.network_allowed = network
        described.network = "allowed for runs that ask for it" if network else "not allowed"
    described.warm_kernels = _names(caps.get(protocol.CAP_WARM_KERNELS))
    _limits(described, caps.get(protocol.CAP_LIMITS))
    return described


# --- runs ------------------------------------------------------------------------------------------------
# What a run may require (protocol.REQUIRED_ISOLATION), in words; "none" requires nothing.
REQUIRED_ISOLATION = {
    "sandbox": "a sandboxed node (bubblewrap namespaces)",
    "limits": "a node with a per-run user and limits",
}


@dataclass
class RunRequirements:
    """What a run asked of the node that takes it; empty (false) when any node would do."""

    tags: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tags or self.needs)


def _gpu_need(gpus: int, memory_mb: int) -> str | None:
    if not gpus:
        return None
    need = f"{gpus} GPUs of its own" if gpus > 1 else "a GPU of its own"
    if memory_mb:
        need += f" with at least {megabytes(memory_mb)} of memory" + (" each" if gpus > 1 else "")
    return need


def run_requirements(stored: Any) -> RunRequirements:
    """A run's stored requirements in words, read as the scheduler reads them (rows of any age)."""
    needs = read_requirements(stored)
    described = RunRequirements(tags=_names(list(needs.tags)) or [])
    if gpu := _gpu_need(needs.gpus, needs.min_gpu_memory_mb):
        described.needs.append(gpu)
    if needs.isolation in REQUIRED_ISOLATION:
        described.needs.append(REQUIRED_ISOLATION[needs.isolation])
    elif needs.isolation not in (None, protocol.ISOLATION_NONE):
        # Kept by the reader, and no node satisfies it: say so rather than hide it.
        described.needs.append(f"isolation “{needs.isolation}” (unknown to this site)")
    if needs.network:
        described.needs.append("network access (only nodes that allow it)")
    return described
