"""The agent wheel the site builds from agent/ and serves for `pip install URL`."""

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from django.http import Http404
from django.test import RequestFactory

from apps.compute import agent_dist

REPO = Path(__file__).resolve().parents[2]
AGENT_DIR = REPO / "agent"
PYPROJECT = tomllib.loads((AGENT_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def wheel() -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(agent_dist.build_wheel()))


@pytest.fixture
def wheel_file(tmp_path: Path) -> Path:
    path = tmp_path / agent_dist.wheel_filename()
    path.write_bytes(agent_dist.build_wheel())
    return path


@pytest.fixture
def agent_copy(tmp_path: Path) -> Path:
    """A private copy of agent/ to edit."""
    copy = tmp_path / "agent"
    shutil.copytree(AGENT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return copy


def dist_info() -> str:
    return f"reprolab_agent-{PYPROJECT['version']}.dist-info"


def test_version_and_file_name_come_from_pyproject():
    assert agent_dist.agent_version() == PYPROJECT["version"] == "0.1.0"
    assert agent_dist.wheel_filename() == "reprolab_agent-0.1.0-py3-none-any.whl"


def test_wheel_is_a_valid_zip_with_the_package_and_dist_info(wheel: zipfile.ZipFile):
    assert wheel.testzip() is None
    names = wheel.namelist()
    assert "reprolab_agent/probe.py" in names
    package_files = sorted(
        path.relative_to(AGENT_DIR).as_posix()
        for path in (AGENT_DIR / "reprolab_agent").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    assert sorted(name for name in names if name.startswith("reprolab_agent/")) == package_files
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert set(names) - set(package_files) == {
        f"{dist_info()}/{name}" for name in ("METADATA", "WHEEL", "entry_points.txt", "RECORD")
    }
    assert names[-1] == f"{dist_info()}/RECORD"
    assert wheel.read("reprolab_agent/probe.py") == (AGENT_DIR / "reprolab_agent" / "probe.py").read_bytes()


def test_record_lists_every_file_with_matching_hash_and_size(wheel: zipfile.ZipFile):
    rows = list(csv.reader(io.StringIO(wheel.read(f"{dist_info()}/RECORD").decode())))
    assert [row[0] for row in rows] == wheel.namelist()
    *hashed, record = rows
    assert record == [f"{dist_info()}/RECORD", "", ""]
    for name, digest, size in hashed:
        data = wheel.read(name)
        assert digest == record_hash(data), name
        assert int(size) == len(data), name


def test_metadata_from_pyproject(wheel: zipfile.ZipFile):
    metadata = Parser().parsestr(wheel.read(f"{dist_info()}/METADATA").decode())
    assert metadata["Metadata-Version"] == "2.1"
    assert metadata["Name"] == PYPROJECT["name"] == "reprolab-agent"
    assert metadata["Version"] == PYPROJECT["version"]
    assert metadata["Requires-Python"] == PYPROJECT["requires-python"] == ">=3.10"
    assert metadata.get_all("Requires-Dist") == [
        *PYPROJECT["dependencies"],
        'cupy-cuda12x; extra == "gpu"',
        'nvidia-ml-py; extra == "gpu"',
    ]
    assert metadata.get_all("Provides-Extra") == ["gpu"]
    assert "papermill>=2.5" in metadata.get_all("Requires-Dist", [])
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload() == (AGENT_DIR / "README.md").read_text(encoding="utf-8")
    assert "django" not in " ".join(metadata.get_all("Requires-Dist", [])).lower()


def test_wheel_and_entry_points_files(wheel: zipfile.ZipFile):
    wheel_meta = Parser().parsestr(wheel.read(f"{dist_info()}/WHEEL").decode())
    assert wheel_meta["Wheel-Version"] == "1.0"
    assert wheel_meta["Root-Is-Purelib"] == "true"
    assert wheel_meta.get_all("Tag") == ["py3-none-any"]
    assert wheel_meta["Generator"]
    entry_points = wheel.read(f"{dist_info()}/entry_points.txt").decode()
    assert entry_points == "[console_scripts]\nreprolab-agent = reprolab_agent.cli:main\n"


def test_build_is_reproducible_and_cached():
    first = agent_dist.build_wheel()
    assert agent_dist.build_wheel() is first  # from the cache
    agent_dist._cache.clear()
    rebuilt = agent_dist.build_wheel()
    assert rebuilt is not first
    assert rebuilt == first  # fixed timestamps and modes: same bytes, same sha256
    assert agent_dist.wheel_sha256() == hashlib.sha256(first).hexdigest()


def test_rebuilt_when_a_file_changes_appears_or_goes(agent_copy: Path):
    first = agent_dist.build_wheel(agent_copy)
    probe = agent_copy / "reprolab_agent" / "probe.py"
    probe.write_text(probe.read_text() + "\n# edited\n")
    edited = agent_dist.build_wheel(agent_copy)
    assert edited != first
    assert zipfile.ZipFile(io.BytesIO(edited)).read("reprolab_agent/probe.py").endswith(b"# edited\n")

    (agent_copy / "reprolab_agent" / "extra.py").write_text("X = 1\n")
    (agent_copy / "reprolab_agent" / "__pycache__").mkdir(exist_ok=True)
    (agent_copy / "reprolab_agent" / "__pycache__" / "extra.cpython-311.pyc").write_bytes(b"\0")
    (agent_copy / "reprolab_agent" / "stray.pyc").write_bytes(b"\0")
    names = zipfile.ZipFile(io.BytesIO(agent_dist.build_wheel(agent_copy))).namelist()
    assert "reprolab_agent/extra.py" in names
    assert not any(name.endswith(".pyc") for name in names)

    (agent_copy / "reprolab_agent" / "extra.py").unlink()
    assert "reprolab_agent/extra.py" not in zipfile.ZipFile(io.BytesIO(agent_dist.build_wheel(agent_copy))).namelist()


def test_version_bump_renames_the_wheel(agent_copy: Path):
    pyproject = agent_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))

    assert agent_dist.agent_version(agent_copy) == "0.2.0"
    assert agent_dist.wheel_filename(agent_copy) == "reprolab_agent-0.2.0-py3-none-any.whl"
    names = zipfile.ZipFile(io.BytesIO(agent_dist.build_wheel(agent_copy))).namelist()
    assert "reprolab_agent-0.2.0.dist-info/METADATA" in names


def test_missing_sources_raise_a_clear_error(tmp_path: Path):
    with pytest.raises(agent_dist.AgentDistError, match="does not exist"):
        agent_dist.build_wheel(tmp_path / "nowhere")


def test_pip_installs_the_wheel_without_an_index(wheel_file: Path, tmp_path: Path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
         "--no-cache-dir", "--target", str(target), str(wheel_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "reprolab_agent" / "probe.py").is_file()
    assert (target / dist_info() / "METADATA").is_file()
    assert (target / "bin" / "reprolab-agent").is_file()  # the console script

    # Import from the install, run somewhere that is not the source checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    code = (
        "import json, reprolab_agent.probe as p, sys; "
        "c = p.probe_capabilities(); "
        "print(json.dumps({'file': p.__file__, 'version': c['agent_version'], 'summary': p.summarize(c)}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert Path(answer["file"]).resolve().is_relative_to(target.resolve())
    assert answer["version"] == "0.1.0"  # read from the installed wheel's metadata
    assert "CPU" in answer["summary"]


def test_view_serves_the_wheel():
    request = RequestFactory().get(f"/agent/{agent_dist.wheel_filename()}")

    response = agent_dist.agent_wheel(request, agent_dist.wheel_filename())

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response.content == agent_dist.build_wheel()
    assert response["Content-Length"] == str(len(response.content))
    assert agent_dist.wheel_filename() in response["Content-Disposition"]


@pytest.mark.parametrize("filename", ["reprolab_agent-0.0.1-py3-none-any.whl", "../pyproject.toml", "probe.py"])
def test_view_404s_other_file_names(filename: str):
    with pytest.raises(Http404):
        agent_dist.agent_wheel(RequestFactory().get(f"/agent/{filename}"), filename)


def test_view_refuses_post():
    filename = agent_dist.wheel_filename()
    response = agent_dist.agent_wheel(RequestFactory().post(f"/agent/{filename}"), filename)
    assert response.status_code == 405


def test_index_links_the_wheel_with_its_sha256():
    response = agent_dist.agent_index(RequestFactory().get("/agent/"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    sha256 = hashlib.sha256(agent_dist.build_wheel()).hexdigest()
    link = f'<a href="{agent_dist.wheel_filename()}#sha256={sha256}" data-requires-python="&gt;=3.10">'
    assert link in page


def test_index_link_stays_relative_to_the_folder_without_trailing_slash():
    page = agent_dist.agent_index(RequestFactory().get("/agent")).content.decode()
    assert f'href="agent/{agent_dist.wheel_filename()}#sha256=' in page
