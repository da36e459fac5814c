"""Forms for the compute pages: registering a node, and running a notebook version.

Run parameters arrive as text, one input per declared parameter. A value is read as JSON, then as
a Python literal (papermill lists defaults as Python source: `True`, `'text'`, `(1, 2)`), and
otherwise kept as the text typed; a string parameter always keeps the text when it does not read
as a string. An input left empty, or left at the notebook's own default, is not sent: the
notebook's default applies (which also keeps defaults that are expressions, such as
`list(range(3))`, intact). The service checks names and types and says what is wrong.
"""

from __future__ import annotations

import ast
import contextlib
import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from apps.accounts.models import User
from apps.core.inputs import parse_int
from apps.projects.models import DatasetVersion, NotebookVersion, Project

from . import trust
from .models import Node

PARAMETER_PREFIX = "param_"
TAG_MAX_LENGTH = 50


class ProjectChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} ({obj.slug})"


class NodeForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Yours to choose, e.g. lab-workstation or colab-a100.")
    tags = forms.CharField(
        required=False,
        max_length=500,
        help_text="Comma-separated, e.g. <code>gpu, a100</code>. A run that requires tags only goes to nodes with all of them.",
    )
    max_concurrency = forms.IntegerField(
        min_value=1, max_value=64, initial=1, label="Max concurrency", help_text="Runs it executes at a time."
    )
    shared = forms.BooleanField(
        required=False,
        label="Shared: take runs from everyone on this site",
        help_text="Staff only. Otherwise it takes your own runs and those of the projects ticked below.",
    )
    projects = ProjectChoiceField(
        queryset=Project.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Projects (where you have the member role or higher) whose runs this node may take, besides your own.",
    )

    def __init__(self, *args: Any, owner: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        if not trust.may_share_nodes(owner):
            # A shared node sees every user's runs: only staff may offer one (see trust.py).
            del self.fields["shared"]
        writer_of = Project.objects.visible_to(owner).filter(user_role__in=trust.WRITER_ROLES)  # type: ignore[misc]
        self.fields["projects"].queryset = writer_of.order_by("name", "slug")  # type: ignore[attr-defined]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if Node.objects.filter(owner=self.owner, name=name).exists():
            raise ValidationError(f"You already have a node named “{name}”.")
        return name

    def clean_tags(self) -> list[str]:
        tags = [t.strip().lower() for t in str(self.cleaned_data.get("tags") or "").split(",") if t.strip()]
        too_long = [t for t in tags if len(t) > TAG_MAX_LENGTH]
        if too_long:
            raise ValidationError(f"Tags are at most {TAG_MAX_LENGTH} characters: “{too_long[0][:60]}…”.")
        return sorted(set(tags))


class _NotJson(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(name)  # NaN and Infinity are not JSON, and PostgreSQL refuses them


def _as_json(value: Any) -> Any:
    """The value as plain JSON (tuples become lists), or _NotJson for sets, bytes, complex, nan."""
    try:
        return json.loads(json.dumps(value, allow_nan=False), parse_constant=_reject_constant)
    except (TypeError, ValueError, RecursionError) as error:
        raise _NotJson(str(error)) from error


def parse_parameter(raw: str, type_name: str | None) -> Any:
    """One parameter's value from the text typed for it (see the module docstring)."""
    text = raw.strip()
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, _NotJson, RecursionError):
        try:
            value = _as_json(ast.literal_eval(text))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, _NotJson):
            value = raw
    if type_name == "str" and not isinstance(value, str):
        value = raw
    return value


class RunForm(forms.Form):
    """Run one notebook version: an input per declared parameter, and input dataset versions."""

    datasets = forms.ModelMultipleChoiceField(
        queryset=DatasetVersion.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args: Any, version: NotebookVersion, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.declared: list[dict[str, Any]] = [p for p in version.parameters if isinstance(p, dict) and p.get("name")]
        for parameter in self.declared:
            self.fields[PARAMETER_PREFIX + str(parameter["name"])] = forms.CharField(
                required=False, strip=False, label=str(parameter["name"]), max_length=100_000
            )
        self.fields["datasets"].queryset = DatasetVersion.objects.filter(  # type: ignore[attr-defined]
            dataset__project=project
        ).select_related("dataset")

    def parameters(self) -> dict[str, Any]:
        """The values to send: parsed, without the empty ones and those left at the default."""
        values: dict[str, Any] = {}
        for parameter in self.declared:
            name = str(parameter["name"])
            raw = self.cleaned_data.get(PARAMETER_PREFIX + name) or ""
            if not raw.strip() or raw.strip() == str(parameter.get("default", "")).strip():
                continue
            values[name] = parse_parameter(raw, parameter.get("inferred_type_name"))
        return values

    def submitted_fields(self) -> list[dict[str, Any]]:
        """The declared parameters with the text submitted for each, to show the form again."""
        return [
            {
                **parameter,
                "default": self.data.get(PARAMETER_PREFIX + str(parameter["name"]), parameter.get("default", "")),
            }
            for parameter in self.declared
        ]

    def selected_dataset_ids(self) -> list[int]:
        ids = []
        for value in self.data.getlist("datasets") if hasattr(self.data, "getlist") else []:
            with contextlib.suppress(ValidationError):  # "²" passes isdigit() but not int()
                ids.append(parse_int(str(value), field="datasets", minimum=1))
        return ids
