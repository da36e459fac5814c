"""Notebook version diffs: nbdime's structural diff turned into per-cell, per-line changes a person
can read, and rendered (autoescaped) by templates/review/_notebook_diff.html."""

import copy

from django.template.loader import render_to_string
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from apps.review.notebook_diff import CellChange, LineChange, diff_summary, notebook_diff


def nb(*cells):
    return new_notebook(cells=list(cells), metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})


def code(cell_id, source, *outputs, execution_count=None, metadata=None):
    return new_code_cell(
        source, id=cell_id, outputs=list(outputs), execution_count=execution_count, metadata=metadata or {}
    )


def md(cell_id, source):
    return new_markdown_cell(source, id=cell_id)


def stream(text):
    return new_output("stream", name="stdout", text=text)


def result(text, count=None):
    return new_output("execute_result", data={"text/plain": text}, execution_count=count)


def ops(change):
    return [(line.op, line.text) for line in change.source_lines]


def by_id(changes):
    return {change.cell_id: change for change in changes}


def test_identical_notebooks_are_all_unchanged():
    old = nb(md("intro", "# Title\nSome text"), code("c1", "x = 1\nprint(x)", stream("1\n")))
    changes = notebook_diff(old, copy.deepcopy(old))
    assert [c.status for c in changes] == ["unchanged", "unchanged"]
    assert [(c.old_index, c.new_index) for c in changes] == [(0, 0), (1, 1)]
    assert ops(changes[1]) == [("same", "x = 1"), ("same", "print(x)")]
    assert not any(c.outputs_changed or c.metadata_changed or c.output_summary for c in changes)


def test_added_removed_modified_unchanged_cells_in_new_order():
    """New-notebook order; a removed cell stays at its old position, before what replaced it."""
    old = nb(
        md("intro", "# Analysis"),
        code("load", "import pandas as pd\ndf = pd.read_csv('data.csv')"),
        code("plot", "df.plot()"),
        code("stats", "df.describe()"),
    )
    new = nb(
        md("intro", "# Analysis"),
        code("load", "import pandas as pd\ndf = pd.read_csv('data-v2.csv')"),
        code("clean", "df = df.dropna()"),
        code("stats", "df.describe()"),
    )
    changes = notebook_diff(old, new)
    assert [(c.status, c.cell_id, c.old_index, c.new_index) for c in changes] == [
        ("unchanged", "intro", 0, 0),
        ("modified", "load", 1, 1),
        ("removed", "plot", 2, None),
        ("added", "clean", None, 2),
        ("unchanged", "stats", 3, 3),
    ]
    cells = by_id(changes)
    assert ops(cells["load"]) == [
        ("same", "import pandas as pd"),
        ("removed", "df = pd.read_csv('data.csv')"),
        ("added", "df = pd.read_csv('data-v2.csv')"),
    ]
    assert ops(cells["clean"]) == [("added", "df = df.dropna()")]
    assert ops(cells["plot"]) == [("removed", "df.plot()")]
    assert all(c.cell_type == "code" for c in changes[1:])
    assert changes[0].cell_type == "markdown"


def test_cell_added_at_start_and_removed_at_end():
    old = nb(code("a", "a = 1"), code("b", "b = 2"))
    new = nb(md("top", "# New heading"), code("a", "a = 1"))
    changes = notebook_diff(old, new)
    assert [(c.status, c.cell_id, c.old_index, c.new_index) for c in changes] == [
        ("added", "top", None, 0),
        ("unchanged", "a", 0, 1),
        ("removed", "b", 1, None),
    ]


def test_a_line_added_within_a_cell_is_one_added_line():
    old = nb(code("c", "import math\nr = 2\narea = math.pi * r ** 2\nprint(area)"))
    new = nb(code("c", "import math\nr = 2\nr = r * 1.5\narea = math.pi * r ** 2\nprint(area)"))
    [change] = notebook_diff(old, new)
    assert change.status == "modified"
    assert ops(change) == [
        ("same", "import math"),
        ("same", "r = 2"),
        ("added", "r = r * 1.5"),
        ("same", "area = math.pi * r ** 2"),
        ("same", "print(area)"),
    ]
    assert not change.outputs_changed
    assert not change.metadata_changed


def test_a_line_appended_after_the_last_line_leaves_that_line_same():
    old = nb(code("c", "x = 1\ny = 2"))
    new = nb(code("c", "x = 1\ny = 2\nz = 3"))
    [change] = notebook_diff(old, new)
    assert ops(change) == [("same", "x = 1"), ("same", "y = 2"), ("added", "z = 3")]


def test_outputs_changed_is_detected_and_summarised():
    old = nb(code("c", "print(total)", stream("41\n"), execution_count=3))
    new = nb(code("c", "print(total)", stream("42\n"), execution_count=3))
    [change] = notebook_diff(old, new)
    assert change.status == "modified"
    assert change.outputs_changed
    assert change.output_summary == "1 output changed"
    assert ops(change) == [("same", "print(total)")]

    more = nb(code("c", "print(total)", stream("41\n"), result("'done'"), execution_count=3))
    [change] = notebook_diff(old, more)
    assert change.outputs_changed
    assert "1 output added" in change.output_summary


def test_reexecuted_notebook_is_unchanged():
    def run(count, started, papermill_duration):
        return nb(
            md("intro", "# Results"),
            code(
                "c1",
                "x = 6 * 7\nx",
                result("42", count=count),
                execution_count=count,
                metadata={
                    "execution": {"iopub.execute_input": started, "shell.execute_reply": started},
                    "papermill": {"duration": papermill_duration, "status": "completed"},
                    "ExecuteTime": {"start_time": started},
                    "tags": ["answer"],
                },
            ),
        )

    first = run(1, "2024-01-01T10:00:00Z", 0.12)
    second = run(17, "2025-06-30T08:30:00Z", 0.98)
    second.cells[1].outputs[0]["metadata"] = {"timing": 0.98}
    changes = notebook_diff(first, second)
    assert [c.status for c in changes] == ["unchanged", "unchanged"]
    assert diff_summary(changes) == {"added": 0, "removed": 0, "modified": 0, "unchanged": 2}

    # ...but a real metadata change (a tag) is reported.
    tagged = copy.deepcopy(second)
    tagged.cells[1].metadata["tags"] = ["answer", "slow"]
    [_, change] = notebook_diff(first, tagged)
    assert change.status == "modified"
    assert change.metadata_changed
    assert not change.outputs_changed
    assert all(line.op == "same" for line in change.source_lines)


def test_markdown_cell_diff():
    old = nb(md("m", "# Method\n\nWe sample 100 points.\n\nSee [1]."))
    new = nb(md("m", "# Method\n\nWe sample 1000 points.\n\nSee [1]."))
    [change] = notebook_diff(old, new)
    assert change.cell_type == "markdown"
    assert change.status == "modified"
    assert ops(change) == [
        ("same", "# Method"),
        ("same", ""),
        ("removed", "We sample 100 points."),
        ("added", "We sample 1000 points."),
        ("same", ""),
        ("same", "See [1]."),
    ]
    assert not change.outputs_changed
    assert change.output_summary == ""


def test_sources_stored_as_lists_of_lines_like_ipynb_json():
    old = nb(code("c", "a = 1\nb = 2\n"))
    new = nb(code("c", "a = 1\nb = 3\n"))
    old["cells"][0]["source"] = ["a = 1\n", "b = 2\n"]
    new["cells"][0]["source"] = ["a = 1\n", "b = 3\n"]
    [change] = notebook_diff(dict(old), dict(new))
    assert ops(change) == [("same", "a = 1"), ("removed", "b = 2"), ("added", "b = 3")]


def test_long_unchanged_runs_in_a_modified_cell_are_collapsed():
    lines = [f"line_{n} = {n}" for n in range(30)]
    changed = list(lines)
    changed[15] = "line_15 = 'changed'"
    old = nb(code("c", "\n".join(lines)))
    new = nb(code("c", "\n".join(changed)))
    [change] = notebook_diff(old, new)
    assert change.source_lines[0] == LineChange("skip", "… 12 unchanged lines")
    assert [line.text for line in change.source_lines[1:4]] == ["line_12 = 12", "line_13 = 13", "line_14 = 14"]
    assert change.source_lines[4:6] == [
        LineChange("removed", "line_15 = 15"),
        LineChange("added", "line_15 = 'changed'"),
    ]
    assert [line.text for line in change.source_lines[6:9]] == ["line_16 = 16", "line_17 = 17", "line_18 = 18"]
    assert change.source_lines[9] == LineChange("skip", "… 11 unchanged lines")
    assert len(change.source_lines) == 10

    [full] = notebook_diff(old, new, context=None)
    assert len(full.source_lines) == 31
    assert not any(line.op == "skip" for line in full.source_lines)


def test_cell_type_change_is_a_removal_and_an_addition():
    old = nb(code("x", "Some words"))
    new = nb(md("x2", "Some words"))
    changes = notebook_diff(old, new)
    assert sorted((c.status, c.cell_type) for c in changes) == [("added", "markdown"), ("removed", "code")]


def test_diff_summary_counts():
    old = nb(md("a", "A"), code("b", "b = 1"), code("c", "c = 1"), code("d", "d = 1"))
    new = nb(md("a", "A"), code("b", "b = 2"), code("d", "d = 1"), code("e", "e = 1"), code("f", "f = 1"))
    summary = diff_summary(notebook_diff(old, new))
    assert summary == {"added": 2, "removed": 1, "modified": 1, "unchanged": 2}
    assert diff_summary([]) == {"added": 0, "removed": 0, "modified": 0, "unchanged": 0}


def test_template_renders_changes_and_collapses_unchanged_cells():
    old = nb(md("intro", "# Title"), code("c", "x = 1\nprint(x)", stream("1\n")), code("gone", "legacy_plot(df)"))
    new = nb(md("intro", "# Title"), code("c", "x = 2\nprint(x)", stream("2\n")), code("fresh", "import seaborn"))
    changes = notebook_diff(old, new)
    html = render_to_string("review/_notebook_diff.html", {"changes": changes, "summary": diff_summary(changes)})
    assert '<details class="nbdiff-cell nbdiff-unchanged"' in html
    assert 'class="nbdiff-cell nbdiff-modified"' in html
    assert "cell 2 → 2" in html
    assert 'class="nbdiff-line nbdiff-added"' in html
    assert 'class="nbdiff-line nbdiff-removed"' in html
    assert "outputs changed" in html
    assert "1 added" in html
    assert "1 removed" in html


def test_hostile_source_is_escaped():
    hostile = "</pre><script>alert(1)</script>"
    old = nb(md("m", "# Safe"), code("c", "print('hi')"))
    new = nb(md("m", "# Safe\n" + hostile), code("c", "print('hi')"), code("evil", hostile))
    new.cells[2].metadata["x"] = "<img src=x onerror=alert(2)>"
    changes = notebook_diff(old, new)
    assert any(isinstance(c, CellChange) and c.status == "added" for c in changes)
    html = render_to_string("review/_notebook_diff.html", {"changes": changes, "summary": diff_summary(changes)})
    assert "<script>" not in html
    assert "</pre><script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;" in html


def test_hostile_cell_id_and_unchanged_content_are_escaped():
    hostile = '"><script>alert(1)</script>'
    old = nb(code("ok", hostile))
    old.cells[0]["id"] = "x\"><script>alert('id')</script>"
    changes = notebook_diff(old, copy.deepcopy(old))
    html = render_to_string("review/_notebook_diff.html", {"changes": changes, "summary": diff_summary(changes)})
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
