"""The rules of grading, without a node: how the graded notebook is rebuilt from the instructor's
source, and how a node's observations of a test cell become points (nbgrader's semantics, with
nothing passed by default)."""

import json

import pytest

from apps.courses.models import CellOutcome
from apps.courses.nbgrader_format import student_version
from apps.courses.rebuild import rebuild
from apps.courses.scoring import TAMPER_NO_PROOF, TAMPER_NO_RESET, partial_credit, score_test, student_message

from . import grading_sources as sources


def _source() -> dict:
    return json.loads(json.dumps(sources.three_questions()))


def _cells(nb: dict) -> dict:
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"] if "nbgrader" in c.get("metadata", {})}


class TestRebuild:
    def test_answers_come_from_the_submission_and_everything_else_from_the_source(self):
        source = _source()
        given = student_version(source)
        submitted = json.loads(sources.student_notebook(given, sources.ANSWERS["honest"]))
        result = rebuild(source, given, submitted)
        cells = _cells(result.nb)
        assert cells["add"]["source"] == sources.ANSWERS["honest"]["add"]
        assert sources.HIDDEN_MARK in cells["test_add"]["source"]  # hidden tests restored
        assert sources.RUBRIC_MARK not in json.dumps(result.nb)  # never a mark scheme
        assert cells["test_add"]["source"] == _cells(source)["test_add"]["source"]
        assert result.flags == []
        assert result.unanswered == set()
        assert all(c.get("outputs", []) == [] for c in result.nb["cells"])
        assert result.nb["metadata"]["kernelspec"]["name"] == "python3"

    def test_edited_deleted_and_retyped_cells_change_nothing_but_are_flagged(self):
        source = _source()
        given = student_version(source)
        submitted = json.loads(sources.edited_tests_notebook(given))
        submitted["cells"] = [c for c in submitted["cells"] if c["metadata"]["nbgrader"]["grade_id"] != "setup"]
        submitted["cells"].append(_cells(submitted)["add"])  # the add answer twice
        result = rebuild(source, given, submitted)
        cells = _cells(result.nb)
        assert cells["test_add"]["source"] == _cells(source)["test_add"]["source"]
        assert cells["test_add"]["metadata"]["nbgrader"]["points"] == 2
        assert cells["test_mean"]["cell_type"] == "code"
        assert cells["setup"]["source"] == _cells(source)["setup"]["source"]
        assert set(result.flags) >= {
            "test or read-only cell 'setup' was deleted",
            "the nbgrader metadata of cell 'test_add' was edited",
            "read-only cell 'test_add' was edited; the instructor's copy was graded",
            "cell 'test_mean' was changed from code to markdown",
            "grade_id 'add' appears more than once; the first cell was taken",
        }

    def test_a_missing_answer_is_graded_as_the_stub_the_student_got(self):
        source = _source()
        given = student_version(source)
        submitted = json.loads(sources.student_notebook(given, {}))
        submitted["cells"] = [c for c in submitted["cells"] if c["metadata"]["nbgrader"]["grade_id"] != "add"]
        result = rebuild(source, given, submitted)
        assert "raise NotImplementedError()" in _cells(result.nb)["add"]["source"]
        assert "answer cell 'add' was deleted" in result.flags
        assert {"add", "mean", "explain"} <= result.unanswered

    @pytest.mark.parametrize(
        "cells",
        [
            [],
            ["not a cell"],
            [{"cell_type": "code"}],
            [{"metadata": {"nbgrader": "x"}}],
            [{"metadata": {"nbgrader": {"grade_id": 7}}}],
        ],
    )
    def test_odd_submitted_cells_never_crash_the_rebuild(self, cells):
        source = _source()
        result = rebuild(source, student_version(source), {"cells": cells})
        assert len(result.nb["cells"]) == len(source["cells"])


OK = {"reply": "ok", "proof": True, "reset": True, "error": False, "stderr": False, "result": None, "undone": []}


class TestScoring:
    def test_a_passing_test_earns_its_points(self):
        assert score_test(OK, 2.0).points == 2.0
        assert score_test(OK, 2.0).outcome == CellOutcome.PASSED

    @pytest.mark.parametrize(
        ("change", "outcome"),
        [
            ({"reply": "error", "error": True, "ename": "AssertionError"}, CellOutcome.FAILED),
            ({"reply": "timeout"}, CellOutcome.TIMEOUT),
            ({"reply": "none", "note": "the kernel died"}, CellOutcome.NO_REPLY),
            ({"stderr": True}, CellOutcome.FAILED),
            ({"proof": False}, CellOutcome.FAILED),  # "ok" without the test's code having run
            ({"reset": False}, CellOutcome.FAILED),
            ({"error": True}, CellOutcome.FAILED),  # an error output with an ok reply
        ],
    )
    def test_anything_but_a_clean_ok_reply_with_its_proof_scores_0(self, change, outcome):
        score = score_test({**OK, **change}, 2.0)
        assert score.points == 0
        assert score.outcome == outcome

    def test_no_observation_at_all_scores_0(self):
        assert score_test(None, 5.0).points == 0

    def test_suspected_tampering_is_flagged(self):
        assert TAMPER_NO_PROOF in score_test({**OK, "proof": False}, 1.0).flags
        assert TAMPER_NO_RESET in score_test({**OK, "reset": False}, 1.0).flags
        undone = score_test({**OK, "undone": ["input transformers"]}, 1.0)
        assert undone.points == 1.0  # the test ran on the restored kernel: its result stands
        assert "input transformers" in undone.flags[0]

    @pytest.mark.parametrize(
        ("result", "credit", "points"),
        [("1.5", 1.5, 1.5), ("3", 3.0, 3.0), ("7", 3.0, 3.0), ("0.0", None, 3.0), ("-1", None, 3.0),
         ("nan", None, 3.0), ("inf", None, 3.0), ("1e400", None, 3.0), ("'text'", None, 3.0), (None, None, 3.0)],
    )  # fmt: skip
    def test_partial_credit_is_nbgraders(self, result, credit, points):
        """A result above 0 is the points earned (at most the cell's); anything else, full points."""
        assert partial_credit(result, 3.0) == credit
        assert score_test({**OK, "result": result}, 3.0).points == points

    def test_students_read_the_feedback_executions_error_never_the_graded_ones(self):
        hidden = student_message(CellOutcome.FAILED, hidden=True, feedback_error=None, timeout_seconds=30)
        assert hidden == "A hidden test failed."
        visible = student_message(
            CellOutcome.FAILED, hidden=True, feedback_error=("AssertionError", "1 != 2"), timeout_seconds=30
        )
        assert visible == "AssertionError: 1 != 2"
        assert student_message(CellOutcome.PASSED, hidden=True, feedback_error=None, timeout_seconds=30) == ""
