from typing import Any

from django import forms

from .models import Project, Role


class ProjectForm(forms.ModelForm[Project]):
    class Meta:
        model = Project
        fields = ["name", "slug", "description", "license", "visibility"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        help_texts = {
            "slug": "Lowercase letters, digits and hyphens; part of every URL.",
            "license": "SPDX id, e.g. MIT or CC-BY-4.0.",
        }


class NotebookUploadForm(forms.Form):
    file = forms.FileField(label="Notebook (.ipynb)", widget=forms.ClearableFileInput(attrs={"accept": ".ipynb"}))
    path = forms.CharField(required=False, max_length=500, help_text="Path in the project; defaults to the file name.")
    message = forms.CharField(required=False, max_length=500, label="What changed")
    environment = forms.FileField(
        required=False,
        label="Environment (optional)",
        help_text="requirements.txt, pyproject.toml or uv.lock: this version's packages (wins over the project's).",
    )


class EnvironmentForm(forms.Form):
    file = forms.FileField(label="Declaration", help_text="requirements.txt, pyproject.toml or uv.lock")
    layered = forms.BooleanField(
        required=False, label="Layered over the node's base packages (e.g. Colab's preinstalled stack)"
    )


class DatasetForm(forms.Form):
    name = forms.SlugField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A FileField taking several files: the widget hands over a list, which FileField rejects."""

    def clean(self, data: Any, initial: Any = None) -> Any:
        clean_one = super().clean
        if isinstance(data, list | tuple) and data:
            return [clean_one(item, initial) for item in data]
        return [clean_one(data, initial)]


class DatasetUploadForm(forms.Form):
    data_files = MultipleFileField(label="Files", widget=MultipleFileInput(attrs={"multiple": True}))
    message = forms.CharField(required=False, max_length=500, label="What changed")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
