"""A three-question assignment in nbgrader's format, and the notebooks students hand in for it:
honest, partly right, and each way of tampering the teaching issue lists. Used by the grading
tests (tests/integration/test_grading.py), the comparison with nbgrader autograde, and the
throughput benchmark (bench/grading_bench.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import nbformat

from .sources import graded

HIDDEN_MARK = "hidden-check-7f3a"  # appears only in hidden tests: must never reach a student
RUBRIC_MARK = "rubric-secret-41c9"  # appears only in a task's mark scheme: never for students either
DATA = "x\n1\n2\n3\n4\n"


def three_questions() -> nbformat.NotebookNode:
    """add (2 points, with a hidden test), mean over the data file (3 points, partial credit by
    its result), a manually graded explanation (1 point) and a task with a mark scheme (1 point)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        graded(
            nbformat.v4.new_code_cell("import csv\nrows = [int(r['x']) for r in csv.DictReader(open('data.csv'))]"),
            locked=True,
            grade_id="setup",
        ),
        graded(
            nbformat.v4.new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION"),
            solution=True,
            grade_id="add",
        ),
        graded(
            nbformat.v4.new_code_cell(
                "assert add(1, 2) == 3\n"
                "### BEGIN HIDDEN TESTS\n"
                f"assert add(-1, 1) == 0, '{HIDDEN_MARK}'\n"
                "### END HIDDEN TESTS"
            ),
            grade=True,
            grade_id="test_add",
            points=2,
        ),
        graded(
            nbformat.v4.new_code_cell(
                "def mean(xs):\n    ### BEGIN SOLUTION\n    return sum(xs) / len(xs)\n    ### END SOLUTION"
            ),
            solution=True,
            grade_id="mean",
        ),
        graded(
            # nbgrader's partial credit: the cell's result is the points earned.
            nbformat.v4.new_code_cell("1.5 * (mean(rows) == 2.5) + 1.5 * (mean([2, 4]) == 3)"),
            grade=True,
            grade_id="test_mean",
            points=3,
        ),
        graded(
            nbformat.v4.new_markdown_cell(
                "Why does the mean need the length?\n### BEGIN SOLUTION\nTo divide.\n### END SOLUTION"
            ),
            solution=True,
            grade=True,
            grade_id="explain",
            points=1,
        ),
        graded(
            nbformat.v4.new_markdown_cell(
                f"Sketch the data.\n=== BEGIN MARK SCHEME ===\n{RUBRIC_MARK}: both axes named.\n=== END MARK SCHEME ==="
            ),
            task=True,
            locked=True,  # as nbgrader's own toolbar makes task cells (its autograde refuses others)
            grade_id="sketch",
            points=1,
        ),
    ]
    return nb


ANSWERS = {
    "honest": {
        "add": "def add(a, b):\n    return a + b",
        "mean": "def mean(xs):\n    return sum(xs) / len(xs)",
        "explain": "Because the mean divides the sum by the count.",
    },
    # add is right for the visible test only (the hidden one fails); mean is wrong on the data
    # file but right for [2, 4]: partial credit 1.5 of 3.
    "partial": {
        "add": "def add(a, b):\n    return 3 if (a, b) == (1, 2) else 99",
        "mean": "def mean(xs):\n    return 3.0",
    },
    "blank": {},
    # A test that writes to stderr scores 0 in nbgrader, however right the answer.
    "noisy": {
        "add": "import sys\ndef add(a, b):\n    print('adding', a, b, file=sys.stderr)\n    return a + b",
        "mean": "def mean(xs):\n    print('mean of', len(xs), 'values')\n    return sum(xs) / len(xs)",
    },
    # An answer cell that raises after defining its function: the tests still see the function.
    "answer_raises": {
        "add": "def add(a, b):\n    return a + b\nraise ValueError('left in by mistake')",
        "mean": "def mean(xs):\n    return sum(xs) / len(xs)",
        "explain": "It divides by len(xs).",
    },
}

WRONG_ADD = "def add(a, b):\n    return 0\n"
RIGHT_MEAN = "def mean(xs):\n    return sum(xs) / len(xs)"

# Each tampering answer gets add wrong and tries to make its test pass anyway; mean is honest
# (3 points), so a tampering submission that works would show more than 3 test points.
TAMPERING = {
    "input_transformer": WRONG_ADD + "get_ipython().input_transformers_cleanup.append(lambda lines: [])",
    "selective_transformer": WRONG_ADD
    + "get_ipython().input_transformers_cleanup.append(lambda lines: [l for l in lines if 'assert' not in l])",
    "ast_transformer": WRONG_ADD
    + "import ast\nclass Drop(ast.NodeTransformer):\n    def visit_Assert(self, node):\n        return None\n"
    + "get_ipython().ast_transformers.append(Drop())",
    "showtraceback": WRONG_ADD
    + "ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\nip._showtraceback = lambda *a, **k: None",
    "custom_exception_handler": WRONG_ADD + "get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)",
    "prints_all_passed": WRONG_ADD + "print('All tests passed!')\nprint('Score: 6/6')",
    "sys_exit": WRONG_ADD + "import sys\nsys.exit(0)",
    "os_exit": WRONG_ADD + "import os\nos._exit(0)",
    "kills_kernel": WRONG_ADD + "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    "replaced_run_cell": WRONG_ADD
    + "from IPython.core.interactiveshell import InteractiveShell\n_orig = InteractiveShell.run_cell\n"
    + "InteractiveShell.run_cell = lambda self, cell, *a, **k: _orig(self, 'pass', *a, **k)",
    "replaced_execute_handler": WRONG_ADD
    + "k = get_ipython().kernel\nk.shell_handlers['execute_request'] = k.shell_handlers['kernel_info_request']",
    "settrace": WRONG_ADD + "import sys\nsys.settrace(lambda *a: None)",
    "audit_hook": WRONG_ADD
    + "import ast, sys\nclass Drop(ast.NodeTransformer):\n    def visit_Assert(self, node):\n        return None\n"
    + "def hook(event, args):\n    if event == 'compile' and Drop not in map(type, get_ipython().ast_transformers):\n"
    + "        get_ipython().ast_transformers.append(Drop())\ntry:\n    sys.addaudithook(hook)\nexcept RuntimeError as e:\n"
    + "    print(e)",
    "compiler_patch": WRONG_ADD
    + "import ast, builtins\nimport IPython.core.compilerop as c\nclass Drop(ast.NodeTransformer):\n"
    + "    def visit_Assert(self, node):\n        return None\n"
    + "def compile(source, *a, **k):\n    tree = builtins.compile(source, *a, **k)\n"
    + "    return ast.fix_missing_locations(Drop().visit(tree)) if isinstance(tree, ast.AST) else tree\n"
    + "c.compile = compile",
    "reads_hidden_tests": WRONG_ADD
    + "import os, glob\nfound = []\nfor p in glob.glob('/**/*.ipynb', recursive=True) + glob.glob('**/*', recursive=True):\n"
    + "    try:\n        found.append(open(p, errors='ignore').read())\n    except Exception:\n        pass\n"
    + "print([t for t in found if 'HIDDEN' in t][:3])\nprint(dict(os.environ))",
    "writes_result_files": WRONG_ADD
    + "import json\nfor name in ('_output.ipynb', 'results.json', 'feedback.ipynb', 'gradebook.json'):\n"
    + "    open(name, 'w').write(json.dumps({'score': 100, 'passed': True}))",
    "network": WRONG_ADD
    + "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('connected')\n"
    + "except OSError as e:\n    print('no network:', e)",
    "fork_bomb": WRONG_ADD
    + "import os\nfor _ in range(100000):\n    try:\n        if os.fork() == 0:\n            import time; time.sleep(60); os._exit(0)\n"
    + "    except OSError:\n        break",
    "memory_hog": WRONG_ADD + "hog = []\nwhile True:\n    hog.append(bytearray(64 * 2**20))",
}


def student_notebook(student_version: dict[str, Any], answers: dict[str, str]) -> bytes:
    """The student version with answer cells filled in (by grade_id), as a student's file."""
    nb = copy.deepcopy(student_version)
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return json.dumps(nb).encode()


def tampered_notebook(student_version: dict[str, Any], name: str) -> bytes:
    return student_notebook(student_version, {"add": TAMPERING[name], "mean": RIGHT_MEAN})


def edited_tests_notebook(student_version: dict[str, Any]) -> bytes:
    """Wrong answers, with the test cells emptied, retyped and their points raised."""
    wrong = {"add": WRONG_ADD, "mean": "def mean(xs):\n    raise ValueError('not done')"}
    nb = json.loads(student_notebook(student_version, wrong))
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id") == "test_add":
            cell["source"] = "pass"
            meta["points"] = 100
        if meta.get("grade_id") == "test_mean":
            cell["cell_type"] = "markdown"
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            cell["source"] = "3.0"
    return json.dumps(nb).encode()
