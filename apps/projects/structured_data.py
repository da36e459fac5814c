"""schema.org descriptions of public projects and notebooks (Google Dataset Search and other
harvesters read these from the pages)."""

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from .models import Notebook, NotebookVersion, Project


def _description(text: str, fallback: str) -> str:
    # Dataset search wants 50 to 5,000 characters.
    description = (text or "").strip() or fallback
    if len(description) < 50:
        description = f"{description} — {fallback}"
    return description[:5000]


def _license(project: Project) -> str | None:
    return f"https://spdx.org/licenses/{project.license}" if project.license else None


def project_ld(request: HttpRequest, project: Project) -> dict[str, Any]:
    url = request.build_absolute_uri(reverse("projects:detail", args=[project.slug]))
    data: dict[str, Any] = {
        "@type": "Dataset",
        "@id": url,
        "url": url,
        "identifier": url,
        "name": project.name,
        "description": _description(
            project.description, f"Reproducible research project {project.name} on ReproLab: notebooks and datasets."
        ),
        "dateModified": project.updated_at.isoformat(),
        "creator": [
            {"@type": "Person", "name": m.user.username} for m in project.memberships.all() if m.role == "owner"
        ],
        "hasPart": [
            {
                "@type": "SoftwareSourceCode",
                "name": nb.path,
                "url": request.build_absolute_uri(reverse("projects:notebook", args=[project.slug, nb.path])),
            }
            for nb in project.notebooks.all()
        ],
    }
    if _license(project):
        data["license"] = _license(project)
    return data


def notebook_ld(request: HttpRequest, project: Project, notebook: Notebook, version: NotebookVersion) -> dict[str, Any]:
    url = (
        request.build_absolute_uri(reverse("projects:notebook", args=[project.slug, notebook.path]))
        + f"?v={version.number}"
    )
    download = request.build_absolute_uri(reverse("projects:notebook-download", args=[project.slug, version.pk]))
    data: dict[str, Any] = {
        "@type": "SoftwareSourceCode",
        "@id": url,
        "url": url,
        "identifier": f"sha256:{version.sha256}",
        "name": f"{notebook.path} (version {version.number})",
        "description": _description(
            version.message,
            f"Jupyter notebook {notebook.path}, version {version.number}, in project {project.name} on ReproLab.",
        ),
        "version": str(version.number),
        "programmingLanguage": version.language or "python",
        "encodingFormat": "application/x-ipynb+json",
        "dateCreated": version.created_at.isoformat(),
        "isPartOf": {
            "@type": "Dataset",
            "name": project.name,
            "url": request.build_absolute_uri(reverse("projects:detail", args=[project.slug])),
        },
        "distribution": {"@type": "DataDownload", "contentUrl": download, "encodingFormat": "application/x-ipynb+json"},
    }
    if version.created_by:
        data["creator"] = {"@type": "Person", "name": version.created_by.username}
    if _license(project):
        data["license"] = _license(project)
    return data
