"""Reproduction checks with real reruns on real agents; the verdict is settled by the Celery
worker when the reruns end."""

import pytest

from apps.reproducibility.models import Reproduction
from tests.factories import upload_notebook

from .fabric import FINAL, wait_for_state
from .servers import wait_until

pytestmark = pytest.mark.integration


def _reproduce(stack, run_id: int, **settings) -> dict:
    status, body = stack.api("POST", f"/api/v1/runs/{run_id}/reproduce/", settings)
    assert status == 201, body
    assert isinstance(body, dict)
    reproduction_id = body["id"]
    wait_until(
        lambda: Reproduction.objects.get(pk=reproduction_id).verdict != "pending",
        timeout=90,
        what=f"reproduction {reproduction_id} to be settled",
    )
    status, body = stack.api("GET", f"/api/v1/reproductions/{reproduction_id}/")
    assert status == 200
    assert isinstance(body, dict)
    return body


def test_reproduction_verdicts_for_deterministic_random_and_nearly_equal_notebooks(stack):
    sources = {
        "deterministic": "from reprolab_agent import record\nprint('answer', 6 * 7)\nrecord('answer', 42)",
        "unseeded": "import random\nprint('sample', random.random())",
        "tiny": "import random\nprint('value', 1.0 + random.random() * 1e-12)",
    }
    runs = {}
    for name, source in sources.items():
        notebook = upload_notebook(stack.project, stack.user, f"{name}.ipynb", source=source).notebook
        runs[name] = stack.submit(notebook)
    assert [wait_for_state(run_id, FINAL).state for run_id in runs.values()] == ["succeeded"] * 3

    deterministic = _reproduce(stack, runs["deterministic"])
    assert deterministic["verdict"] == "reproduced"
    assert deterministic["report"]["values"] == [{"name": "answer", "original": 42, "reruns": [42], "status": "same"}]
    assert deterministic["report"]["environment"]["same_stack"] is True

    unseeded = _reproduce(stack, runs["unseeded"])
    assert unseeded["verdict"] == "not_reproduced"
    assert unseeded["report"]["cells"][0]["status"] == "different"  # the differing cell comes first

    flaky = _reproduce(stack, runs["unseeded"], repeats=3)
    cell = flaky["report"]["cells"][0]
    assert cell["flaky"] is True
    assert flaky["verdict"] == ("reproduced_within_tolerance" if cell["original_inside_spread"] else "not_reproduced")

    tiny = _reproduce(stack, runs["tiny"], rtol=1e-9)
    assert tiny["verdict"] == "reproduced_within_tolerance"


def test_only_succeeded_runs_can_be_reproduced(stack):
    notebook = upload_notebook(stack.project, stack.user, "fails.ipynb", source="raise ValueError('nope')").notebook
    run_id = stack.submit(notebook)
    assert wait_for_state(run_id, FINAL).state == "failed"
    status, body = stack.api("POST", f"/api/v1/runs/{run_id}/reproduce/", {})
    assert status == 400
    assert isinstance(body, dict)
    assert "succeeded" in body["detail"]
    status, body = stack.api("POST", f"/api/v1/runs/{run_id}/reproduce/", {"repeats": 99})
    assert status == 400


def test_array_artifacts_are_kept_and_compared_within_tolerance(stack):
    source = (
        "import os, random\nimport numpy as np\nos.makedirs('out', exist_ok=True)\n"
        "np.save('out/field.npy', np.linspace(0, 1, 1000) + random.random() * 1e-13)\n"
        "open('out/summary.txt', 'w').write('1000 points')"
    )
    notebook = upload_notebook(stack.project, stack.user, "arrays.ipynb", source=source).notebook
    run_id = stack.submit(notebook)
    assert wait_for_state(run_id, FINAL).state == "succeeded"
    status, artifacts = stack.api("GET", f"/api/v1/runs/{run_id}/artifacts/")
    assert status == 200
    assert isinstance(artifacts, list)
    assert [a["path"] for a in artifacts] == ["out/field.npy", "out/summary.txt"]

    reproduction = _reproduce(stack, run_id, rtol=1e-9, atol=1e-12)
    field, summary = reproduction["report"]["artifacts"]
    assert summary == {"path": "out/summary.txt", "status": "same"}
    assert (field["path"], field["status"]) == ("out/field.npy", "within_tolerance")
    # Compared by the agent, where the rerun's array was written, against the original's.
    [evidence] = field["arrays"]
    assert (evidence["where"], evidence["device"]) == ("node", "cpu")
    assert (evidence["elements"], evidence["mismatched"]) == (1000, 0)
    assert 0 < evidence["max_abs_diff"] < 1e-12
    assert reproduction["verdict"] == "reproduced_within_tolerance"
