"""nbgrader itself, as a test dependency only, in a virtual environment of its own (beside
papermill its dependencies slow execution about 2x): built once per checkout with uv."""

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


GRADES_SCRIPT = """
import json, sys
from nbgrader.api import Gradebook
root, assignment = sys.argv[1], sys.argv[2]
found = {}
with Gradebook(f"sqlite:///{root}/gradebook.db") as gradebook:
    for student in gradebook.students:
        submission = gradebook.find_submission(assignment, student.id)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                found.setdefault(student.id, {})[grade.name] = {
                    "auto": grade.auto_score, "needs_manual": grade.needs_manual_grade, "max": grade.max_score,
                }
print(json.dumps(found))
"""


def autograde(
    course_root: Path, assignment: str, submissions: dict[str, dict[str, bytes]]
) -> tuple[dict[str, Any], float]:
    """Run `nbgrader autograde` on each student's files (course_root/source/<assignment> must hold
    the instructor's files). Returns per student and graded cell {"auto", "needs_manual", "max"},
    and the seconds `nbgrader autograde` itself took (its command, start to end)."""
    python = nbgrader_python()
    generate_assignment(course_root, assignment)
    for student, files in submissions.items():
        folder = course_root / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            (folder / name).write_bytes(body)
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    started = time.perf_counter()
    subprocess.run(
        [str(python), "-m", "nbgrader", "autograde", assignment, "--force"],
        cwd=course_root,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    grades = subprocess.run(
        [str(python), "-c", GRADES_SCRIPT, str(course_root), assignment],
        cwd=course_root,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
        text=True,
    )
    return json.loads(grades.stdout), seconds
