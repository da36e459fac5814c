"""Instructor source notebooks in nbgrader's format, for the assignment tests."""

from typing import Any

import nbformat


def graded(cell: Any, **flags: Any) -> Any:
    cell.metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": False, "locked": False, **flags}
    return cell


def problem_set() -> nbformat.NotebookNode:
    """Every kind of cell nbgrader knows: read-only, autograded answers (with and without a
    solution region), a test with hidden tests, a manually graded markdown answer, a task with a
    mark scheme, and a plain cell; with outputs and output metadata to clear."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["celltoolbar"] = "Create Assignment"
    test = nbformat.v4.new_code_cell(
        "assert square(2) == 4\n### BEGIN HIDDEN TESTS\nassert square(3) == 9  # hidden\n### END HIDDEN TESTS"
    )
    test.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    test.execution_count = 3
    test.metadata["collapsed"] = True
    answer = nbformat.v4.new_code_cell(
        'def square(x):\n    """Square x."""\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION'
    )
    nb.cells = [
        graded(nbformat.v4.new_markdown_cell("# Problem set 1\nRead carefully."), locked=True, grade_id="intro"),
        graded(answer, solution=True, grade_id="square"),
        graded(test, grade=True, grade_id="test_square", points=2),
        graded(
            nbformat.v4.new_code_cell("answer = 42  # the whole cell is the solution"), solution=True, grade_id="whole"
        ),
        graded(
            nbformat.v4.new_markdown_cell("Explain.\n### BEGIN SOLUTION\nBecause squares.\n### END SOLUTION"),
            solution=True,
            grade=True,
            points=3,
            grade_id="explain",
        ),
        graded(
            nbformat.v4.new_markdown_cell(
                "Describe the plot.\n=== BEGIN MARK SCHEME ===\nMentions the axes.\n=== END MARK SCHEME ==="
            ),
            task=True,
            points=1,
            grade_id="task1",
        ),
        graded(nbformat.v4.new_code_cell("assert answer == 42"), grade=True, grade_id="test_answer", points=1.5),
        nbformat.v4.new_code_cell("print('plain')"),
    ]
    return nb


def second_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        graded(
            nbformat.v4.new_code_cell("    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION\ny = 2"),
            solution=True,
            grade_id="indented",
        ),
        graded(nbformat.v4.new_code_cell("assert y == 2"), grade=True, grade_id="t", points=1),
    ]
    return nb
