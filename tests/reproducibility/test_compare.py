"""Cell-by-cell comparison of executed notebooks (pure functions, synthetic notebooks)."""

import base64
import io

from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from apps.reproducibility.compare import SCRAP_MIME, Tolerance, compare_runs, compare_text, normalise


def notebook(*outputs_per_cell, execution_count=1, cell_ids=("a", "b", "c", "d")):
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# Title")]
    for i, outputs in enumerate(outputs_per_cell):
        cell = new_code_cell(f"cell {i}", execution_count=execution_count)
        cell.id = cell_ids[i]
        cell.metadata["papermill"] = {
            "duration": 0.1 * (i + execution_count),
            "start_time": f"2026-01-0{execution_count}",
        }
        cell.outputs = list(outputs)
        nb.cells.append(cell)
    return nb


def stdout(text):
    return new_output("stream", name="stdout", text=text)


def result(text):
    return new_output("execute_result", data={"text/plain": text}, execution_count=1)


def png(color):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buffer, format="PNG")
    return new_output(
        "display_data", data={"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": "<Figure>"}
    )


def scrap(name, value):
    return new_output("display_data", data={SCRAP_MIME: {"name": name, "data": value, "encoder": "json", "version": 1}})


TOL = Tolerance(rtol=1e-9)


def test_identical_runs_reproduce_despite_timing_ids_and_counts():
    a = notebook([stdout("mean 2.5\n")], [result("<object at 0x7f12ab34cd56>")], execution_count=1, cell_ids=("x", "y"))
    b = notebook([stdout("mean 2.5\n")], [result("<object at 0x7f99ff00aa11>")], execution_count=7, cell_ids=("p", "q"))
    report = compare_runs(a, [b], TOL)
    assert report["verdict"] == "reproduced"
    assert [c["status"] for c in report["cells"]] == ["same", "same"]


def test_stream_chunks_are_compared_joined():
    a = notebook([stdout("a"), stdout("b\n")])
    b = notebook([stdout("ab\n")])
    assert compare_runs(a, [b], TOL)["verdict"] == "reproduced"


def test_a_float_off_by_1e_12_is_reproduced_within_tolerance():
    a = notebook([stdout("loss 0.123456789012345\n")])
    b = notebook([stdout("loss 0.123456789012445\n")])
    report = compare_runs(a, [b], Tolerance(rtol=1e-9))
    assert report["verdict"] == "reproduced_within_tolerance"
    assert report["cells"][0]["status"] == "within_tolerance"
    assert compare_runs(a, [b], Tolerance(rtol=1e-15))["verdict"] == "not_reproduced"


def test_different_text_is_not_reproduced_and_comes_first_with_evidence():
    a = notebook([stdout("ok\n")], [stdout("random 0.1\n")])
    b = notebook([stdout("ok\n")], [stdout("random 0.7\n")])
    report = compare_runs(a, [b], TOL)
    assert report["verdict"] == "not_reproduced"
    first = report["cells"][0]
    assert first["cell"] == 1
    assert first["status"] == "different"
    assert first["original"] == ["random 0.1\n"]
    assert first["rerun"] == ["random 0.7\n"]


def test_words_differing_around_equal_numbers_are_different():
    assert compare_text("train 1.0", "test 1.0", TOL) == "different"


def test_images_compare_by_pixels():
    same = compare_runs(notebook([png((10, 20, 30))]), [notebook([png((10, 20, 31))])], TOL)
    assert same["verdict"] == "reproduced_within_tolerance"
    other = compare_runs(notebook([png((10, 20, 30))]), [notebook([png((250, 0, 0))])], TOL)
    assert other["verdict"] == "not_reproduced"


def test_errors_compare_by_name_and_message():
    error = new_output("error", ename="ValueError", evalue="bad", traceback=["..."])
    other = new_output("error", ename="KeyError", evalue="'x'", traceback=["..."])
    assert compare_runs(notebook([error]), [notebook([error])], TOL)["verdict"] == "reproduced"
    assert compare_runs(notebook([error]), [notebook([other])], TOL)["verdict"] == "not_reproduced"


def test_recorded_values_are_compared_by_name():
    a = notebook([scrap("accuracy", 0.93), scrap("labels", ["a", "b"])])
    close = notebook([scrap("accuracy", 0.93 + 1e-13), scrap("labels", ["a", "b"])])
    far = notebook([scrap("accuracy", 0.5), scrap("labels", ["a", "b"])])
    report = compare_runs(a, [close], TOL)
    assert report["verdict"] == "reproduced_within_tolerance"
    assert {v["name"]: v["status"] for v in report["values"]} == {"accuracy": "within_tolerance", "labels": "same"}
    assert compare_runs(a, [far], TOL)["verdict"] == "not_reproduced"
    # Scraps are values, not displayed output: they do not count as cell output.
    assert normalise(a)[0][0].outputs == []


def test_with_repeats_varying_cells_are_flaky_and_judged_by_the_spread():
    original = notebook([stdout("sample 0.50\n")])
    reruns = [notebook([stdout("sample 0.40\n")]), notebook([stdout("sample 0.60\n")])]
    report = compare_runs(original, reruns, TOL)
    cell = report["cells"][0]
    assert cell["flaky"] is True
    assert cell["original_inside_spread"] is True
    assert report["verdict"] == "reproduced_within_tolerance"

    outlier = notebook([stdout("sample 5.00\n")])
    report = compare_runs(outlier, reruns, TOL)
    assert report["cells"][0]["flaky"] is True
    assert report["cells"][0]["original_inside_spread"] is False
    assert report["verdict"] == "not_reproduced"


def test_a_missing_cell_is_different():
    report = compare_runs(notebook([stdout("a\n")], [stdout("b\n")]), [notebook([stdout("a\n")])], TOL)
    assert report["verdict"] == "not_reproduced"
