"""Scores from what a node observed of each test cell (reprolab_agent.grading.observe), and the
words a student may read about them.

A test scores only when the kernel replied to that very cell's execution with status ok, the
cell's proof of execution arrived, and the grader could reset the kernel's hooks before it.
Then nbgrader's rule decides (nbgrader.utils.determine_grade): an error or anything on stderr
scores 0; a numeric result above 0 is the points earned (partial credit, at most the cell's);
anything else earns every point. An error, a timeout, a dead kernel, no reply: 0. Nothing
"passes by default".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .models import CellOutcome

TAMPER_NO_PROOF = "the kernel said the test succeeded, but its code did not run to its end (tampering suspected)"
TAMPER_NO_RESET = "the grader could not reset the kernel before this test (tampering suspected)"


@dataclass
class TestScore:
    points: float
    outcome: str
    detail: str = ""  # what the grader saw, for instructors
    flags: list[str] = field(default_factory=list)


def score_test(observation: dict[str, Any] | None, points: float) -> TestScore:
    if observation is None or observation.get("reply") == "none":
        note = (observation or {}).get("note") or "the grading stopped before this test"
        return TestScore(0.0, CellOutcome.NO_REPLY, f"No reply: {note}.")
    flags = []
    if not observation.get("reset"):
        flags.append(TAMPER_NO_RESET)
    undone = [str(name) for name in observation.get("undone") or []]
    if undone:  # the test then ran on the restored kernel: its result stands, the attempt is noted
        flags.append(
            f"before this test the grader undid changes to the kernel: {', '.join(undone)} (tampering suspected)"
        )
    during = [str(name) for name in observation.get("during") or []]
    if during:  # changed while the test ran (a thread, a signal handler): its result cannot stand
        flags.append(f"the kernel was changed while this test ran: {', '.join(during)} (tampering suspected)")
    # Honest code changes these too (matplotlib registers a callback, tqdm starts a thread), so
    # they are only shown; a thread or callback could also be how a test was tampered with.
    quiet = [str(note) for note in [*(observation.get("restored") or []), *(observation.get("during_quiet") or [])]]
    if quiet:
        flags.append(f"around this test: {', '.join(sorted(set(quiet)))} (review)")
    if observation.get("reply") == "ok" and not observation.get("proof"):
        flags.append(TAMPER_NO_PROOF)
    error = f"{observation.get('ename', '')}: {observation.get('evalue', '')}".strip(": ")
    if observation.get("reply") == "timeout":
        return TestScore(0.0, CellOutcome.TIMEOUT, "The test ran past the cell time limit.", flags)
    if observation.get("reply") != "ok" or observation.get("error"):
        return TestScore(0.0, CellOutcome.FAILED, error or "The test raised an error.", flags)
    if TAMPER_NO_RESET in flags or TAMPER_NO_PROOF in flags or during:
        return TestScore(0.0, CellOutcome.FAILED, "; ".join(flags), flags)
    if observation.get("stderr"):
        return TestScore(0.0, CellOutcome.FAILED, "The test wrote to stderr (nbgrader scores that 0).", flags)
    earned = partial_credit(observation.get("result"), points)
    if earned is None or earned >= points:
        return TestScore(points, CellOutcome.PASSED, "", flags)
    return TestScore(earned, CellOutcome.PARTIAL, f"The test's result gives {earned:g} of {points:g} points.", flags)


def partial_credit(result: Any, points: float) -> float | None:
    """nbgrader's partial credit: a result that reads as a number above 0 is the points earned (at
    most the cell's points; nbgrader refuses more); None for anything else (full points)."""
    if not isinstance(result, str):
        return None
    try:
        value = float(result)
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    # To a hundredth of a point: the result is computed in the student's kernel, and its exact
    # digits could carry what a hidden test says back to the student.
    return min(round(value, 2), points)


def student_message(outcome: str, *, hidden: bool, feedback_error: tuple[str, str] | None, timeout_seconds: int) -> str:
    """What the student reads about a test: from the feedback execution (their notebook without
    hidden tests), never from the graded one, whose text may hold hidden tests."""
    if outcome in (CellOutcome.PASSED, CellOutcome.PARTIAL):
        return ""
    if outcome == CellOutcome.TIMEOUT:
        return f"The test ran past the time limit of {timeout_seconds} s."
    if outcome == CellOutcome.NO_REPLY:
        return "The test did not run: the kernel died, stayed busy, or hit a limit before it."
    if feedback_error is not None:
        ename, evalue = feedback_error
        return f"{ename}: {evalue}".strip(": ")[:1000] or "The test raised an error."
    if hidden:
        return "A hidden test failed."
    return "The test failed."
