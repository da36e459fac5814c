"""The grader on the run process's side (reprolab_agent.grading), against a real IPython kernel:
what it reports of each test cell, and how it sees through tampering in the cells before."""

import asyncio
import json

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from reprolab_agent import execute, grading
from reprolab_agent.kernel import capped_client

from tests.courses import grading_sources as sources
from tests.courses.sources import graded


def notebook(
    answer: str, test: str = "assert add(1, 2) == 3", *, partial: str = "add(5, 5) / 20", setup: str = ""
) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        *([graded(nbformat.v4.new_code_cell(setup), locked=True, grade_id="setup")] if setup else []),
        graded(nbformat.v4.new_code_cell(answer), solution=True, grade_id="add"),
        graded(nbformat.v4.new_code_cell(test), grade=True, grade_id="test_add", points=2),
        graded(nbformat.v4.new_code_cell(partial), grade=True, grade_id="partial", points=1),
    ]
    return nb


async def _grade(nb: nbformat.NotebookNode, timeout: int) -> tuple[bool, list[dict]]:
    manager = AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        client_class = grading.observing_client(capped_client(NotebookClient, output_bytes=2**20))
        execution = grading.Execution(client_class, nb, manager, client, cell_timeout=timeout)
        seen: list[dict] = []
        finished = await grading.graded_execution(execution, execute.Progress(), seen.append)
        return finished, seen
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


def grade(answer: str, *, timeout: int = 10, **kwargs) -> tuple[bool, dict[str, dict]]:
    finished, seen = asyncio.run(_grade(notebook(answer, **kwargs), timeout))
    return finished, {o["grade_id"]: o for o in seen}


def test_an_honest_answer_passes_with_its_proof_and_its_partial_credit():
    finished, seen = grade("def add(a, b):\n    return a + b")
    assert finished
    assert seen["test_add"]["reply"] == "ok"
    assert seen["test_add"]["proof"] is True
    assert seen["test_add"]["reset"] is True
    assert seen["test_add"]["undone"] == []
    assert seen["partial"]["result"] == "0.5"  # the proof goes before the last expression


def test_tampering_before_the_tests_is_undone_and_named():
    answer = sources.TAMPERING["selective_transformer"] + "\n" + sources.TAMPERING["showtraceback"].split("\n", 2)[2]
    finished, seen = grade(answer)
    assert finished
    assert seen["test_add"]["reply"] == "error"  # the assert ran, on the restored kernel
    assert seen["test_add"]["ename"] == "AssertionError"
    assert "input transformers" in seen["test_add"]["undone"]
    assert any("showtraceback" in name for name in seen["test_add"]["undone"])


def test_a_kernel_that_can_no_longer_execute_gives_no_proof():
    _, seen = grade(sources.TAMPERING["replaced_execute_handler"])
    assert seen["test_add"]["reset"] is False
    assert seen["test_add"]["proof"] is False


def test_a_dead_kernel_leaves_every_later_test_without_a_reply():
    finished, seen = grade(sources.TAMPERING["os_exit"])
    assert not finished
    assert {o["reply"] for o in seen.values()} == {"none"}
    assert seen["partial"]["note"] == "the kernel died"


def test_a_kernel_that_ignores_interrupts_is_given_up_after_its_timeout():
    stubborn = "import time\nwhile True:\n    try:\n        time.sleep(1)\n    except KeyboardInterrupt:\n        pass"
    finished, seen = grade(stubborn, timeout=2)
    assert not finished
    assert seen["test_add"]["reply"] == "none"
    assert "stayed busy" in seen["test_add"]["note"]


def test_an_audit_hook_is_refused_and_a_compiler_patch_undone():
    finished, seen = grade(
        sources.TAMPERING["audit_hook"] + "\n" + sources.TAMPERING["compiler_patch"].split("\n", 2)[2]
    )
    assert finished
    assert seen["test_add"]["reply"] == "error"
    assert "IPython.core.compilerop.compile" in seen["test_add"]["undone"]


def test_the_instructors_setup_hooks_stay_for_the_tests():
    """A locked cell of the instructor's installs an AST transformer (ints become Fractions): the
    grader keeps it as the kernel the tests were written for, and flags nothing."""
    setup = (
        "import ast\nfrom fractions import Fraction\n"
        "class Exact(ast.NodeTransformer):\n"
        "    def visit_Constant(self, node):\n"
        "        if type(node.value) is int:\n"
        "            return ast.Call(ast.Name('Fraction', ast.Load()), [node], [])\n"
        "        return node\n"
        "get_ipython().ast_transformers.append(Exact())"
    )
    finished, seen = grade("def add(a, b):\n    return a / b", test="assert add(1, 3) == Fraction(1, 3)", setup=setup)
    assert finished
    assert seen["test_add"]["reply"] == "ok"
    assert seen["test_add"]["undone"] == []


def test_what_a_thread_changes_while_a_test_runs_is_reported():
    thread = (
        "def add(a, b):\n    return a + b\n"
        "import threading, time\nip = get_ipython()\ndef noop(*a):\n    pass\n"
        "def loop():\n    while True:\n        if noop not in ip.events.callbacks['pre_run_cell']:\n"
        "            ip.events.register('pre_run_cell', noop)\n        time.sleep(0.001)\n"
        "threading.Thread(target=loop, daemon=True).start()"
    )
    _, seen = grade(thread)
    assert "pre_run_cell callbacks" in seen["test_add"]["during_quiet"]
    assert any("thread" in note for note in seen["test_add"]["restored"])


def test_proof_placement_keeps_the_last_expression_last():
    placed = grading.with_proof("x = 1\nx + 1", "n0nce")
    assert placed.rstrip().endswith("; x + 1")
    assert "n0nce" in placed.rstrip().split("\n")[-1]
    assert grading.with_proof("for i in range(3):\n    pass", "n").rstrip().endswith("{'nonce': 'n'}})")
    assert "run_line_magic" in grading.with_proof("%time x = 1", "n")  # magics translated first
    assert grading.with_proof("def (", "n") == "def ("  # not Python: no proof, the kernel's error
    shared = grading.with_proof("s = 1 / 4; s", "n")  # the last expression on a shared line
    assert shared.rstrip().endswith("{'nonce': 'n'}}); s")


def test_the_feedback_notebook_has_no_hidden_tests():
    nb = json.loads(json.dumps(sources.three_questions()))
    assert grading.has_hidden_tests(nb)
    view = grading.without_hidden_tests(nb)
    assert sources.HIDDEN_MARK not in json.dumps(view)
    assert not grading.has_hidden_tests(view)
