"""Checks on untrusted input that services share: relative paths and notebook documents."""

import ast
import json
import posixpath
import unicodedata
from dataclasses import dataclass
from typing import Any

import nbformat
from django.core.exceptions import ValidationError
from papermill.translators import papermill_translators

from apps.core.inputs import JSONTooDeep, loads_bounded

MAX_PATH_LENGTH = 500


def clean_relative_path(raw: str, *, field: str = "path") -> str:
    """A path inside a project: relative, forward slashes, no `..`, no control characters."""
    path = unicodedata.normalize("NFC", (raw or "").strip())
    if not path:
        raise ValidationError({field: "A path is required, e.g. analysis/model.ipynb."})
    if len(path) > MAX_PATH_LENGTH:
        raise ValidationError({field: f"The path is longer than {MAX_PATH_LENGTH} characters."})
    if path.startswith("/") or path.startswith("~") or (len(path) > 1 and path[1] == ":"):
        raise ValidationError({field: f"'{raw}' is an absolute path; give a path relative to the project."})
    if "\\" in path or any(unicodedata.category(ch).startswith("C") for ch in path):
        raise ValidationError({field: "The path may not contain backslashes or control characters."})
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValidationError({field: f"'{raw}' is not a clean relative path (empty, '.' or '..' segments)."})
    assert posixpath.normpath(path) == path
    return path


@dataclass(frozen=True)
class NotebookInfo:
    kernel_name: str
    language: str
    parameters: list[dict[str, Any]]


def parse_notebook(content: bytes) -> nbformat.NotebookNode:
    """Parse and validate an .ipynb document, or raise ValidationError saying what is wrong."""
    try:
        text = content.decode("utf-8")
        loads_bounded(text)
    except JSONTooDeep as exc:
        # Before nbformat and jsonschema, which recurse per level: 5,000 levels were a 500.
        raise ValidationError({"file": f"Not a notebook: {exc}"}) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError({"file": f"Not a notebook: the file is not valid JSON ({exc})."}) from exc
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several types (ValidationError, NBFormatError, KeyError, …)
        message = getattr(exc, "message", None) or str(exc)
        raise ValidationError({"file": f"Not a valid Jupyter notebook: {message.splitlines()[0][:300]}"}) from exc
    return nb


def notebook_info(nb: nbformat.NotebookNode) -> NotebookInfo:
    """Kernel, language and the parameters papermill would inject (from the `parameters` cell)."""
    metadata = nb.get("metadata", {})
    kernel_name = str(metadata.get("kernelspec", {}).get("name", "") or "")
    language = str(
        metadata.get("kernelspec", {}).get("language") or metadata.get("language_info", {}).get("name") or "python"
    )
    parameters: list[dict[str, Any]] = []
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is not None:
        try:
            translator = papermill_translators.find_translator(kernel_name or language, language)
            parameters = [dict(p._asdict()) for p in translator.inspect(cell)]
        except (ValueError, NotImplementedError):
            # No papermill translator for this language: the notebook still runs, but its
            # parameters cannot be listed.
            parameters = []
    if language == "python":
        for parameter in parameters:
            if parameter["inferred_type_name"] == "None":
                parameter["inferred_type_name"] = _python_literal_type(parameter["default"])
    return NotebookInfo(kernel_name=kernel_name, language=language, parameters=parameters)


def _python_literal_type(default: str) -> str:
    """papermill only reads type annotations (`n: int = 3`); most parameter cells have none, so
    infer the type from a literal default. Anything that is not a literal stays 'None'."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return "None"
    return "None" if value is None else type(value).__name__
