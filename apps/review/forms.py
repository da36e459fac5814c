"""The publish form: one author per line ("Given names | Family names | ORCID | affiliation")."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.compute.models import Run
from apps.projects.models import DatasetVersion, Notebook, NotebookVersion

from . import services
from .models import ReviewMode


def _authors(text: str) -> list[dict[str, str]]:
    authors = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")] + ["", "", "", ""]
        authors.append({"given_names": parts[0], "family_names": parts[1], "orcid": parts[2], "affiliation": parts[3]})
    return authors


class PublishForm(forms.Form):
    notebook_version = forms.ModelChoiceField(queryset=NotebookVersion.objects.none(), empty_label=None)
    run = forms.ModelChoiceField(
        queryset=Run.objects.none(), required=False, help_text="The executed result to show (default: the latest)."
    )
    title = forms.CharField(max_length=300)
    authors = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: Given names | Family names | ORCID iD (optional) | affiliation (optional).",
    )
    abstract = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5}), max_length=10_000)
    keywords = forms.CharField(required=False, help_text="Comma-separated.")
    license = forms.CharField(max_length=64, help_text="SPDX id, e.g. CC-BY-4.0 (required).")
    datasets = forms.ModelMultipleChoiceField(queryset=DatasetVersion.objects.none(), required=False)
    review_mode = forms.ChoiceField(choices=ReviewMode.choices, initial=ReviewMode.OPEN)
    submit_for_review = forms.BooleanField(
        required=False, initial=True, help_text="Unticked, the version is published at once, without review."
    )

    def __init__(self, *args: Any, notebook: Notebook, new_version: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["notebook_version"].queryset = notebook.versions.order_by("-number")  # type: ignore[attr-defined]
        self.fields["run"].queryset = services.publishable_runs(notebook).order_by("-pk")  # type: ignore[attr-defined]
        self.fields["datasets"].queryset = DatasetVersion.objects.filter(  # type: ignore[attr-defined]
            dataset__project=notebook.project
        ).select_related("dataset")
        if new_version:
            del self.fields["review_mode"]  # the publication's mode stays

    def service_inputs(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "notebook_version": data["notebook_version"],
            "run": data["run"],
            "datasets": list(data["datasets"]),
            "submit_for_review": data["submit_for_review"],
            "metadata": services.clean_metadata(
                title=data["title"],
                authors=_authors(data["authors"]),
                license=data["license"],
                abstract=data["abstract"],
                keywords=[k for k in data["keywords"].split(",")],
            ),
        }
