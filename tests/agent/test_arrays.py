"""reprolab_agent.arrays: .npy arrays compared chunk by chunk within rtol/atol, with evidence.
The same code runs on nodes (CuPy on a GPU) and on the site (NumPy)."""

import numpy as np
import pytest
from reprolab_agent import arrays


def npy(path, array):
    np.save(path, array)
    return str(path)


def compare(a, b, *, rtol=1e-9, atol=0.0, tmp_path):
    return arrays.compare_npy(npy(tmp_path / "a.npy", a), npy(tmp_path / "b.npy", b), rtol=rtol, atol=atol, xp=np)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 1,000 elements, so a test array of a few thousand spans several of them."""
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 1000)


def test_equal_arrays_are_the_same(tmp_path):
    result = compare(np.arange(10.0), np.arange(10.0), tmp_path=tmp_path)
    assert result["status"] == "same"
    assert (result["elements"], result["unequal"], result["mismatched"], result["max_abs_diff"]) == (10, 0, 0, None)


def test_chunked_comparison_within_tolerance_reports_the_largest_difference(tmp_path, small_chunks):
    base = np.linspace(1, 2, 3507)
    noisy = base.copy()
    noisy[2999] += 3e-13  # in the third chunk: every chunk must be looked at
    result = compare(base, noisy, rtol=1e-9, tmp_path=tmp_path)
    assert result["status"] == "within_tolerance"
    assert (result["elements"], result["unequal"], result["mismatched"]) == (3507, 1, 0)
    assert result["max_abs_diff"] == pytest.approx(3e-13, rel=1e-2)
    assert result["max_rel_diff"] == pytest.approx(3e-13 / noisy[2999], rel=1e-2)


def test_a_difference_in_the_last_chunk_alone_is_found_and_counted(tmp_path, small_chunks):
    base = np.linspace(0, 1, 3507)
    changed = base.copy()
    changed[-2:] = [5.0, 6.0]
    result = compare(base, changed, tmp_path=tmp_path)
    assert result["status"] == "different"
    assert result["mismatched"] == 2
    assert result["max_abs_diff"] == pytest.approx(5.0)


def test_tolerance_is_symmetric_and_atol_covers_values_near_zero(tmp_path):
    assert compare(np.array([0.0]), np.array([1e-15]), rtol=1e-9, tmp_path=tmp_path)["status"] == "different"
    assert compare(np.array([0.0]), np.array([1e-15]), atol=1e-12, tmp_path=tmp_path)["status"] == "within_tolerance"
    # max(|a|, |b|) scales rtol, as math.isclose does, whichever side is the original
    assert compare(np.array([1.0]), np.array([1.0 + 1e-10]), tmp_path=tmp_path)["status"] == "within_tolerance"
    assert compare(np.array([1.0 + 1e-10]), np.array([1.0]), tmp_path=tmp_path)["status"] == "within_tolerance"


def test_nan_beside_nan_agrees_and_nan_beside_a_number_does_not(tmp_path):
    assert compare(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), tmp_path=tmp_path)["status"] == "same"
    result = compare(np.array([np.nan, 1.0]), np.array([0.5, 1.0]), tmp_path=tmp_path)
    assert (result["status"], result["mismatched"], result["max_abs_diff"]) == ("different", 1, None)
    assert compare(np.array([np.inf]), np.array([np.inf]), tmp_path=tmp_path)["status"] == "same"
    assert compare(np.array([np.inf]), np.array([-np.inf]), tmp_path=tmp_path)["status"] == "different"


def test_integers_do_not_overflow_and_complex_numbers_compare_by_modulus(tmp_path):
    big = np.array([np.iinfo(np.int64).min, 7], dtype=np.int64)
    other = np.array([np.iinfo(np.int64).max, 7], dtype=np.int64)
    result = compare(big, other, tmp_path=tmp_path)
    assert (result["status"], result["mismatched"]) == ("different", 1)
    assert result["max_abs_diff"] == pytest.approx(2.0**64)
    assert compare(np.array([1 + 1j]), np.array([1 + 1j + 1e-12j]), tmp_path=tmp_path)["status"] == "within_tolerance"


def test_non_numeric_arrays_compare_exactly(tmp_path):
    assert compare(np.array(["a", "b"]), np.array(["a", "b"]), tmp_path=tmp_path)["status"] == "same"
    assert compare(np.array([True, False]), np.array([True, True]), tmp_path=tmp_path)["mismatched"] == 1


def test_shape_dtype_or_unreadable_files_are_different_with_the_reason(tmp_path):
    result = compare(np.zeros((2, 3)), np.zeros((3, 2)), tmp_path=tmp_path)
    assert (result["status"], result["reason"]) == ("different", "original is float64[2, 3], rerun is float64[3, 2]")
    assert "float32" in compare(np.zeros(3), np.zeros(3, dtype=np.float32), tmp_path=tmp_path)["reason"]
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    junk = arrays.compare_npy(str(tmp_path / "junk.npy"), str(tmp_path / "a.npy"), rtol=0, atol=0, xp=np)
    assert junk["status"] == "different"
    assert junk["reason"].startswith("not a loadable array")
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "loadable" in arrays.compare_npy(str(pickled), str(pickled), rtol=0, atol=0, xp=np)["reason"]


def test_without_a_gpu_the_comparison_runs_on_numpy(tmp_path):
    if arrays.probe_gpus()[0]:
        pytest.skip("this machine has a GPU")
    assert arrays.array_module() == (np, "cpu")
    result = arrays.compare_npy(
        npy(tmp_path / "a.npy", np.ones(3)), npy(tmp_path / "b.npy", np.ones(3)), rtol=0, atol=0
    )
    assert (result["status"], result["device"]) == ("same", "cpu")


def test_on_a_gpu_cupy_gives_the_numpy_answer(tmp_path, small_chunks):
    """Runs where CuPy sees a device (a GPU node); skipped elsewhere."""
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no GPU")
    base = np.random.default_rng(1).normal(size=4321)
    noisy = base * (1 + 1e-12)
    a, b = npy(tmp_path / "a.npy", base), npy(tmp_path / "b.npy", noisy)
    on_gpu = arrays.compare_npy(a, b, rtol=1e-9, atol=0, xp=cupy, device="cuda:0")
    on_cpu = arrays.compare_npy(a, b, rtol=1e-9, atol=0, xp=np)
    for key in ("status", "elements", "unequal", "mismatched"):
        assert on_gpu[key] == on_cpu[key]
    assert on_gpu["max_abs_diff"] == pytest.approx(on_cpu["max_abs_diff"])
