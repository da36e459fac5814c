"""nbgrader itself, as a test dependency only, in a virtual environment of its own (beside
papermill its dependencies slow execution about 2x): built once per checkout with uv."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]
NBGRADER = "nbgrader==0.9.6"
VENV = ROOT / "var" / "nbgrader-venv"


def nbgrader_python() -> Path:
    """The interpreter of a virtual environment with nbgrader, made if missing."""
    stamp = VENV / "reprolab-installed"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "nbgrader-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test sessions build it once
        if not stamp.exists() or stamp.read_text() != NBGRADER:
            env = {**os.environ, "UV_SYSTEM_CERTS": "1"}
            env.pop("VIRTUAL_ENV", None)
            venv = [find_uv_bin(), "venv", "--quiet", "--clear", "--python", sys.executable, str(VENV)]
            subprocess.run(venv, check=True, env=env)
            subprocess.run(
                [find_uv_bin(), "pip", "install", "--quiet", "--python", str(VENV / "bin" / "python"), NBGRADER],
                check=True,
                env=env,
                timeout=600,
            )
            stamp.write_text(NBGRADER)
    return VENV / "bin" / "python"


def generate_assignment(course_root: Path, assignment: str) -> Path:
    """Run `nbgrader generate_assignment` on course_root/source/<assignment>; the release folder."""
    python = nbgrader_python()
    (course_root / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course_root)!r}\n"
    )
    subprocess.run(
        [str(python), "-m", "nbgrader", "generate_assignment", assignment, "--force"],
        cwd=course_root,
        # nbgrader runs `alembic` from the PATH when it opens its gradebook.
        env={**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return course_root / "release" / assignment
