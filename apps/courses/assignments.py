"""Assignments: uploading nbgrader-format sources (validated, the student version generated and
stored beside each), releasing them, and the student version's download."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import nbformat
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.core.hashing import store_blob
from apps.projects.validation import clean_relative_path, parse_notebook

from . import nbgrader_format
from .models import Assignment, AssignmentFile, Course


@dataclass(frozen=True)
class Incoming:
    path: str
    content: IO[bytes]


def _student_json(nb: dict[str, Any], path: str) -> bytes:
    """The file as nbgrader writes it (through nbformat: sources as lists of lines, indent 1)."""
    try:
        return (nbformat.writes(nbformat.from_dict(nb)) + "\n").encode()  # nbformat.write ends with one
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON: not text
        raise ValidationError({"files": f"{path}: the notebook holds text that is not valid Unicode."}) from None


def assignment_create(
    *, course: Course, creator: User, name: str, files: Sequence[Incoming], **options: Any
) -> Assignment:
    """A new assignment from its files. Every notebook is validated as an nbgrader source
    (a 400 names the file, the cell and the problem) and its student version generated now."""
    if not files:
        raise ValidationError({"files": "An assignment needs at least one source notebook."})
    if Assignment.objects.filter(course=course, name=name).exists():  # before anything is stored
        raise ValidationError({"name": f"This course has an assignment {name!r} already."})
    prepared: list[dict[str, Any]] = []
    paths: set[str] = set()
    for incoming in files:
        path = clean_relative_path(incoming.path, field="files")
        if path in paths:
            raise ValidationError({"files": f"Two files are called {path!r}."})
        paths.add(path)
        incoming.content.seek(0)
        row: dict[str, Any] = {"path": path, "is_notebook": path.endswith(".ipynb")}
        if row["is_notebook"]:
            content = incoming.content.read()
            try:
                nb = json.loads(json.dumps(parse_notebook(content)))  # plain dicts, as nbformat read it
            except ValidationError as error:
                raise ValidationError({"files": f"{path}: {' '.join(error.messages)}"}) from None
            try:
                graded = nbgrader_format.validate(nb, name=path)
                student_nb = nbgrader_format.student_version(nb)
            except ValidationError as error:
                raise ValidationError({"files": f"{path}: {' '.join(error.messages)}"}) from None
            row["graded_cells"] = [cell.as_json() for cell in graded]
            row["student"] = store_blob(io.BytesIO(_student_json(student_nb, path)))
            incoming.content.seek(0)
        row["blob"] = store_blob(incoming.content)
        prepared.append(row)
    if not any(row["is_notebook"] for row in prepared):
        raise ValidationError({"files": "An assignment needs at least one source notebook (.ipynb)."})
    assignment = Assignment(course=course, name=name, created_by=creator, **options)
    assignment.full_clean(exclude=["course"])
    try:
        with transaction.atomic():
            assignment.save()
            for row in prepared:
                blob, student = row["blob"], row.get("student")
                AssignmentFile.objects.create(
                    assignment=assignment,
                    path=row["path"],
                    sha256=blob.sha256,
                    size=blob.size,
                    storage_name=blob.storage_name,
                    is_notebook=row["is_notebook"],
                    graded_cells=row.get("graded_cells", []),
                    student_sha256=student.sha256 if student else "",
                    student_size=student.size if student else None,
                    student_storage_name=student.storage_name if student else "",
                )
    except IntegrityError:
        raise ValidationError({"name": f"This course has an assignment {name!r} already."}) from None
    return assignment


def assignment_release(*, assignment: Assignment) -> Assignment:
    if assignment.released_at is None:
        assignment.released_at = timezone.now()
        assignment.save(update_fields=["released_at"])
    return assignment


def student_files(assignment: Assignment) -> list[tuple[str, str]]:
    """(path, storage name) of what students get: student versions and data files."""
    return [
        (f.path, f.student_storage_name if f.is_notebook else f.storage_name) for f in assignment.files.order_by("path")
    ]


def release_zip(assignment: Assignment) -> IO[bytes]:
    """The student version as a zip, under the assignment's name (as nbgrader's release folder),
    in a temporary file (spilled to disk past 8 MiB) rewound for streaming; files are copied in
    chunks, never read whole."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 2**20)  # noqa: SIM115 - the response closes it
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, storage_name in student_files(assignment):
            with (
                default_storage.open(storage_name, "rb") as blob,
                archive.open(f"{assignment.name}/{path}", "w") as out,
            ):
                while chunk := blob.read(2**20):
                    out.write(chunk)
    spool.seek(0)
    return spool


MAX_ASSIGNMENT_BYTES = getattr(settings, "REPROLAB_DATASET_UPLOAD_MAX_BYTES", 2 * 1024**3)
