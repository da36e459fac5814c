"""Run requirements: what a run needs of the node that takes it (`Run.requirements`).

`clean_requirements` checks what a submitter sends (POST /api/v1/runs/, a reproduction check, a
review's rerun) and returns the one shape that is stored, every key present:

    {"tags": [str, ...], "gpu": bool, "gpus": int, "min_gpu_memory_mb": int,
     "isolation": str | None, "network": bool}

`gpus` is how many whole GPUs of the node the run gets for itself; `gpu` only says whether that
is more than none (older readers look at it). Asking for a GPU, or for GPU memory, means one GPU
at least. `read_requirements` reads a stored row into the same shape with defaults, so rows
stored before `gpus`, `isolation` and `network` existed still schedule, and an odd value never
stops the scheduler. The keys are those of reprolab_agent.protocol (REQ_*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from reprolab_agent import protocol

MAX_TAGS = 50
MAX_TAG_LENGTH = 50  # as a node's tags
MAX_GPUS = 64
MAX_GPU_MEMORY_MB = 2**31 - 1


@dataclass(frozen=True)
class Requirements:
    tags: tuple[str, ...] = ()
    gpus: int = 0
    min_gpu_memory_mb: int = 0
    isolation: str | None = None  # a key of protocol.REQUIRED_ISOLATION; None: any node
    network: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            protocol.REQ_TAGS: list(self.tags),
            protocol.REQ_GPU: self.gpus > 0,
            protocol.REQ_GPUS: self.gpus,
            protocol.REQ_MIN_GPU_MEMORY_MB: self.min_gpu_memory_mb,
            protocol.REQ_ISOLATION: self.isolation,
            protocol.REQ_NETWORK: self.network,
        }


def _invalid(message: str) -> ValidationError:
    return ValidationError({"requirements": message})


def _flag(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise _invalid(f"requirements.{key} must be true or false.")
    return value


def _whole(raw: dict[str, Any], key: str, maximum: int) -> int:
    value = raw.get(key, 0)
    # bool is an int in Python, and `true` is no count.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _invalid(f"requirements.{key} must be a whole number from 0 to {maximum}.")
    return value


def _tags(raw: dict[str, Any]) -> tuple[str, ...]:
    tags = raw.get(protocol.REQ_TAGS, [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise _invalid("requirements.tags must be a list of non-empty strings.")
    cleaned = sorted({t.strip().lower() for t in tags})
    if len(cleaned) > MAX_TAGS:
        raise _invalid(f"requirements.tags may name at most {MAX_TAGS} tags.")
    if any(len(t) > MAX_TAG_LENGTH for t in cleaned):
        raise _invalid(f"requirements.tags are at most {MAX_TAG_LENGTH} characters each.")
    return tuple(cleaned)


def _isolation(raw: dict[str, Any]) -> str | None:
    value = raw.get(protocol.REQ_ISOLATION)
    if value is None:
        return None
    if not isinstance(value, str) or value not in protocol.REQUIRED_ISOLATION:
        known = ", ".join(protocol.REQUIRED_ISOLATION)
        raise _invalid(f"requirements.isolation must be one of {known} (or left out: any node).")
    return value


def clean_requirements(raw: Any) -> dict[str, Any]:
    """The stored form of a submitter's requirements, or ValidationError({"requirements": why})."""
    if raw is None or raw == "":
        return Requirements().as_json()
    if not isinstance(raw, dict):
        raise _invalid("Requirements must be an object: {" + ", ".join(protocol.REQUIREMENT_KEYS) + "}.")
    unknown = set(raw) - set(protocol.REQUIREMENT_KEYS)
    if unknown:
        raise _invalid(f"Unknown requirement(s): {', '.join(sorted(unknown))}.")
    gpu = _flag(raw, protocol.REQ_GPU)
    gpus = _whole(raw, protocol.REQ_GPUS, MAX_GPUS)
    memory = _whole(raw, protocol.REQ_MIN_GPU_MEMORY_MB, MAX_GPU_MEMORY_MB)
    return Requirements(
        tags=_tags(raw),
        gpus=max(gpus, 1 if gpu or memory > 0 else 0),
        min_gpu_memory_mb=memory,
        isolation=_isolation(raw),
        network=_flag(raw, protocol.REQ_NETWORK),
    ).as_json()


def _stored_whole(value: Any, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        return 0
    return value


def read_requirements(stored: Any) -> Requirements:
    """A stored row's requirements, whatever its age: missing keys take their defaults, odd
    values count as not asked for. An isolation level this site does not know is kept, and no
    node satisfies it: a run is never placed with less isolation than it asked for."""
    if not isinstance(stored, dict):
        return Requirements()
    tags = stored.get(protocol.REQ_TAGS)
    memory = _stored_whole(stored.get(protocol.REQ_MIN_GPU_MEMORY_MB), MAX_GPU_MEMORY_MB)
    wants_gpu = stored.get(protocol.REQ_GPU) is True or memory > 0
    isolation = stored.get(protocol.REQ_ISOLATION)
    return Requirements(
        tags=tuple(sorted({t for t in tags if isinstance(t, str)})) if isinstance(tags, list) else (),
        gpus=max(_stored_whole(stored.get(protocol.REQ_GPUS), MAX_GPUS), 1 if wants_gpu else 0),
        min_gpu_memory_mb=memory,
        isolation=isolation if isinstance(isolation, str) and isolation else None,
        network=stored.get(protocol.REQ_NETWORK) is True,
    )
