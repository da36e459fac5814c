"""Numeric comparison of two `.npy` arrays within rtol/atol: chunk by chunk from memory maps, on
the GPU through CuPy when the machine has one.

One implementation serves both ends of a reproduction check: the agent compares a rerun's arrays
on the node that wrote them (against the original's, fetched into its content-addressed cache), and
the site compares whatever an agent could not (no NumPy there, an older agent). Memory stays flat
at any array size: only one chunk of each array is in memory (and on the device) at a time.

The tolerance test is the symmetric one the cell comparison uses (`math.isclose`):
|a - b| <= max(atol, rtol * max(|a|, |b|)); equal values (infinities too) and NaN beside NaN agree.
Besides the verdict the result carries the evidence a reviewer asks for: how many elements
differ beyond the tolerance and the largest absolute and relative differences.

NumPy is imported lazily (a node without it simply does not compare); CuPy is optional.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from .probe import probe_gpus

SAME, WITHIN, DIFFERENT = "same", "within_tolerance", "different"
CHUNK_ELEMENTS = 1 << 22  # 32 MiB of float64 per array per step: large enough to keep a GPU busy
NUMERIC_KINDS = "iufc"  # integers, unsigned, floats, complex; bool/str/structured compare exactly


@dataclass
class ArrayComparison:
    status: str
    rtol: float
    atol: float
    elements: int = 0
    unequal: int = 0  # elements that are not exactly equal
    mismatched: int = 0  # elements outside the tolerance
    max_abs_diff: float | None = None  # over elements that are not equal (None: all equal)
    max_rel_diff: float | None = None
    device: str = "cpu"
    seconds: float = 0.0
    reason: str = ""  # why the arrays are not comparable (shape, dtype, unreadable)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def array_module() -> tuple[Any, str]:
    """(CuPy, "cuda:0 <name>") when a GPU answers, else (NumPy, "cpu"). Never raises for a
    missing or broken CUDA stack (the probe says why in the node's capabilities): the
    comparison then runs on the CPU."""
    import numpy

    gpus, _ = probe_gpus()
    if gpus:
        import cupy  # type: ignore[import-not-found, unused-ignore]

        return cupy, f"cuda:{gpus[0]['index']} {gpus[0]['name']}"
    return numpy, "cpu"


def compare_npy(
    original: str, rerun: str, *, rtol: float, atol: float, xp: Any = None, device: str = ""
) -> dict[str, Any]:
    """Compare two .npy files. `xp` is the array module (NumPy or CuPy; chosen by
    `array_module()` when omitted). Returns `ArrayComparison.as_dict()`."""
    import numpy as np

    if xp is None:
        xp, device = array_module()
    started = time.perf_counter()
    result = ArrayComparison(status=SAME, rtol=rtol, atol=atol, device=device or "cpu")
    try:
        a = np.load(original, mmap_mode="r", allow_pickle=False)
        b = np.load(rerun, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:  # not an array file, or pickled objects
        result.status, result.reason = DIFFERENT, f"not a loadable array: {error}"[:300]
        return result.as_dict()
    if a.shape != b.shape or a.dtype != b.dtype:
        result.status = DIFFERENT
        result.reason = f"original is {a.dtype}{list(a.shape)}, rerun is {b.dtype}{list(b.shape)}"
        return result.as_dict()
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    result.elements = int(flat_a.size)
    numeric = a.dtype.kind in NUMERIC_KINDS
    for start in range(0, flat_a.size, CHUNK_ELEMENTS):
        stop = start + CHUNK_ELEMENTS
        chunk_a = xp.asarray(np.ascontiguousarray(flat_a[start:stop]))
        chunk_b = xp.asarray(np.ascontiguousarray(flat_b[start:stop]))
        if numeric:
            _numeric_chunk(xp, chunk_a, chunk_b, result)
        else:
            differing = int(xp.count_nonzero(chunk_a != chunk_b))
            result.unequal += differing
            result.mismatched += differing
    if result.mismatched:
        result.status = DIFFERENT
    elif result.unequal:
        result.status = WITHIN
    result.seconds = round(time.perf_counter() - started, 6)
    return result.as_dict()


def _numeric_chunk(xp: Any, a: Any, b: Any, result: ArrayComparison) -> None:
    """Fold one chunk into the running counts. Integers are widened to float64 for the
    differences (no overflow); exact equality is taken on the original values."""
    equal = (a == b) | (xp.isnan(a) & xp.isnan(b)) if a.dtype.kind in "fc" else a == b
    unequal = a.size - int(xp.count_nonzero(equal))
    if not unequal:
        return
    result.unequal += unequal
    if a.dtype.kind in "iu":
        a, b = a.astype(xp.float64), b.astype(xp.float64)
    with _quiet(xp):
        diff = xp.abs(a - b)  # NaN where only one side is NaN, or inf - inf
        scale = xp.maximum(xp.abs(a), xp.abs(b))
        finite = ~equal & xp.isfinite(diff)  # inf beside -inf or a number is never close
        close = equal | (finite & (diff <= xp.maximum(result.atol, result.rtol * scale)))
        result.mismatched += a.size - int(xp.count_nonzero(close))
        # The largest differences among finite ones (NaN against a number has no size: it only
        # counts as a mismatch). JSON has no infinity, so neither does the evidence.
        if bool(finite.any()):
            result.max_abs_diff = max(result.max_abs_diff or 0.0, float(diff[finite].max()))
            relative = diff[finite] / scale[finite]
            relative = relative[xp.isfinite(relative)]
            if relative.size:
                result.max_rel_diff = max(result.max_rel_diff or 0.0, float(relative.max()))


def _quiet(xp: Any) -> Any:
    """Silence NumPy's divide/invalid warnings for NaN and zero scales (CuPy raises none)."""
    errstate = getattr(xp, "errstate", None)
    return errstate(divide="ignore", invalid="ignore") if errstate else contextlib.nullcontext()
