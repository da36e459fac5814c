"""Machine-readable metadata of a publication version: citation data, DataCite JSON (schema 4.5
as the `datacite` package ships it; resourceTypeGeneral ComputationalNotebook), schema.org
JSON-LD and the Signposting links of its landing page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from apps.reproducibility.datacite import SCHEMA_VERSION

from .citation import Author, CitationMeta
from .models import PublicationVersion


def landing_url(request: HttpRequest, version: PublicationVersion) -> str:
    return request.build_absolute_uri(version.get_absolute_url())


def license_url(spdx: str) -> str:
    return f"https://spdx.org/licenses/{spdx}"


def citation_meta(request: HttpRequest, version: PublicationVersion) -> CitationMeta:
    published = version.published_at or version.created_at
    return CitationMeta(
        title=version.title,
        authors=tuple(
            Author(
                given_names=a.get("given_names", ""),
                family_names=a.get("family_names", ""),
                orcid=a.get("orcid", ""),
                affiliation=a.get("affiliation", ""),
            )
            for a in version.authors
        ),
        version=version.number,
        date_published=published.date(),
        url=landing_url(request, version),
        license=version.license,
        abstract=version.abstract,
        keywords=tuple(version.keywords),
        key=f"reprolab-pub{version.publication_id}-v{version.number}",
    )


def _creator(author: dict[str, str]) -> dict[str, Any]:
    family, given = author.get("family_names", ""), author.get("given_names", "")
    creator: dict[str, Any] = {
        "name": f"{family}, {given}" if given else family,
        "nameType": "Personal",
        "familyName": family,
    }
    if given:
        creator["givenName"] = given
    if author.get("orcid"):
        creator["nameIdentifiers"] = [
            {
                "nameIdentifier": f"https://orcid.org/{author['orcid']}",
                "nameIdentifierScheme": "ORCID",
                "schemeUri": "https://orcid.org",
            }
        ]
    if author.get("affiliation"):
        creator["affiliation"] = [{"name": author["affiliation"]}]
    return creator


def publication_datacite(request: HttpRequest, version: PublicationVersion) -> dict[str, Any]:
    url = landing_url(request, version)
    published = version.published_at or version.created_at
    related: list[dict[str, Any]] = []
    earlier = version.publication.versions.filter(number__lt=version.number, status="published").order_by("-number")
    if (previous := earlier.first()) is not None:
        related.append(
            {
                "relatedIdentifier": landing_url(request, previous),
                "relatedIdentifierType": "URL",
                "relationType": "IsNewVersionOf",
            }
        )
    for dataset in version.datasets.all():
        related.append(
            {
                "relatedIdentifier": request.build_absolute_uri(
                    reverse("projects:dataset", args=[version.publication.project.slug, dataset.dataset.name])
                    + f"?v={dataset.number}"
                ),
                "relatedIdentifierType": "URL",
                "relationType": "References",
                "resourceTypeGeneral": "Dataset",
            }
        )
    data: dict[str, Any] = {
        "types": {"resourceTypeGeneral": "ComputationalNotebook", "resourceType": "Jupyter notebook"},
        "creators": [_creator(a) for a in version.authors],
        "titles": [{"title": version.title}],
        "publisher": {"name": "ReproLab"},
        "publicationYear": str(published.year),
        "url": url,
        "version": str(version.number),
        "formats": ["application/x-ipynb+json"],
        "dates": [{"date": published.date().isoformat(), "dateType": "Issued"}],
        "alternateIdentifiers": [
            {"alternateIdentifier": url, "alternateIdentifierType": "URL"},
            {"alternateIdentifier": f"sha256:{version.notebook_version.sha256}", "alternateIdentifierType": "sha256"},
        ],
        "rightsList": [
            {
                "rights": version.license,
                "rightsUri": license_url(version.license),
                "rightsIdentifier": version.license,
                "rightsIdentifierScheme": "SPDX",
            }
        ],
        "schemaVersion": SCHEMA_VERSION,
    }
    if version.abstract:
        data["descriptions"] = [{"description": version.abstract, "descriptionType": "Abstract"}]
    if version.keywords:
        data["subjects"] = [{"subject": k} for k in version.keywords]
    if related:
        data["relatedIdentifiers"] = related
    return data


def publication_ld(request: HttpRequest, version: PublicationVersion) -> dict[str, Any]:
    url = landing_url(request, version)
    description = version.abstract or f"{version.title}: a Jupyter notebook published on ReproLab."
    if len(description) < 50:
        description = f"{description} Executed, versioned and citable on ReproLab (version {version.number})."
    data: dict[str, Any] = {
        "@type": "SoftwareSourceCode",
        "@id": url,
        "url": url,
        "name": version.title,
        "description": description[:5000],
        "version": str(version.number),
        "identifier": url,
        "license": license_url(version.license),
        "programmingLanguage": version.notebook_version.language or "python",
        "encodingFormat": "application/x-ipynb+json",
        "datePublished": (version.published_at or version.created_at).date().isoformat(),
        "creator": [
            {
                "@type": "Person",
                "name": " ".join(p for p in (a.get("given_names"), a.get("family_names")) if p),
                **({"@id": f"https://orcid.org/{a['orcid']}"} if a.get("orcid") else {}),
            }
            for a in version.authors
        ],
        "distribution": {
            "@type": "DataDownload",
            "contentUrl": f"{url}/notebook.ipynb",
            "encodingFormat": "application/x-ipynb+json",
        },
    }
    if version.keywords:
        data["keywords"] = list(version.keywords)
    return data


def signposting_links(request: HttpRequest, version: PublicationVersion) -> str:
    """The landing page's typed links (https://signposting.org/FAIR/): how machines find the
    citable id, the metadata, the license and the content."""
    url = landing_url(request, version)
    links = [
        f'<{url}>; rel="cite-as"',
        f'<{url}/datacite.json>; rel="describedby"; type="application/vnd.datacite.datacite+json"',
        f'<{url}/CITATION.cff>; rel="describedby"; type="application/x-yaml"',
        f'<{license_url(version.license)}>; rel="license"',
        f'<{url}/notebook.ipynb>; rel="item"; type="application/x-ipynb+json"',
        f'<{url}/crate.zip>; rel="item"; type="application/zip"',
    ]
    links += [f'<https://orcid.org/{a["orcid"]}>; rel="author"' for a in version.authors if a.get("orcid")]
    return ", ".join(links)
