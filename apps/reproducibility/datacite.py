"""DataCite metadata (JSON, schema 4.5 as the `datacite` package ships it) for a notebook
version: resourceTypeGeneral ComputationalNotebook. No DOI is minted here: publication (a later
capability) supplies one; until then the version's URL and sha256 are alternate identifiers."""

from __future__ import annotations

from typing import Any

from apps.projects.models import Notebook, NotebookVersion, Project

SCHEMA_VERSION = "http://datacite.org/schema/kernel-4"


def notebook_version_datacite(
    project: Project, notebook: Notebook, version: NotebookVersion, *, url: str, doi: str | None = None
) -> dict[str, Any]:
    owners = [m.user.username for m in project.memberships.select_related("user").filter(role="owner")]
    creators = [
        {"name": name, "nameType": "Personal"}
        for name in (owners or [version.created_by.username if version.created_by else "unknown"])
    ]
    data: dict[str, Any] = {
        "types": {"resourceTypeGeneral": "ComputationalNotebook", "resourceType": "Jupyter notebook"},
        "creators": creators,
        "titles": [
            {"title": f"{notebook.path} (version {version.number})"},
            {"title": project.name, "titleType": "Subtitle"},
        ],
        "publisher": {"name": "ReproLab"},
        "publicationYear": str(version.created_at.year),
        "url": url,
        "version": str(version.number),
        "formats": ["application/x-ipynb+json"],
        "sizes": [f"{version.size} bytes"],
        "dates": [{"date": version.created_at.date().isoformat(), "dateType": "Created"}],
        "alternateIdentifiers": [
            {"alternateIdentifier": url, "alternateIdentifierType": "URL"},
            {"alternateIdentifier": f"sha256:{version.sha256}", "alternateIdentifierType": "sha256"},
        ],
        "descriptions": [
            {
                "description": project.description or f"Jupyter notebook {notebook.path} in project {project.name}.",
                "descriptionType": "Abstract",
            }
        ],
        "schemaVersion": SCHEMA_VERSION,
    }
    if doi:
        data["doi"] = doi
    if project.license:
        data["rightsList"] = [
            {
                "rights": project.license,
                "rightsUri": f"https://spdx.org/licenses/{project.license}",
                "rightsIdentifier": project.license,
                "rightsIdentifierScheme": "SPDX",
            }
        ]
    return data
