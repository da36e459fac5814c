"""Citations for a published notebook version: BibTeX, APA 7 text and CITATION.cff 1.2.0.

A publication is only reusable science if people can cite it, and they cite it in whatever
format their tools take: a `.bib` entry for LaTeX, a plain APA line for a manuscript, a
`CITATION.cff` for GitHub/Zenodo. These are pure functions of one `CitationMeta` so the three
forms can never disagree, and so they can be tested without a database.

The hard parts are the ones people get wrong by hand:
- BibTeX: titles and names come from users, so every LaTeX special character is escaped. Braces
  become `\\textbraceleft{}`/`\\textbraceright{}` rather than `\\{`/`\\}` because BibTeX counts
  even escaped braces, so one unbalanced `{` in a title would corrupt the whole `.bib` file.
  `url` and `doi` are verbatim fields (biblatex), so they are percent-encoded, not escaped.
- APA 7: initials of hyphenated given names ("Jean-Paul" -> "J.-P."), the comma before "&"
  even for two authors, and the 20-author rule (first 19, an ellipsis, then the last).
- CFF: it must validate against the official 1.2.0 JSON schema (the tests check that), so
  ORCIDs are written as `https://orcid.org/<iD>` and the DOI without its resolver.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import yaml

ORCID_RE = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
_DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
_DOI_PREFIX_RE = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", re.IGNORECASE)
_BIBTEX_KEY_BAD_RE = re.compile(r"[^A-Za-z0-9_.:-]+")
_LATEX_SPECIALS_RE = re.compile(r"[\\{}&%$#_~^]")
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "{": r"\textbraceleft{}",
    "}": r"\textbraceright{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# Letters that NFKD does not decompose into ASCII, for readable citation keys.
_ASCII_FOLD = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae", "Æ": "AE"}
)
APA_MAX_AUTHORS = 20
CFF_MESSAGE = "If you use this notebook, please cite it using the metadata from this file."


@dataclass(frozen=True)
class Author:
    given_names: str
    family_names: str
    orcid: str = ""  # bare iD, e.g. "0000-0002-1825-0097"
    affiliation: str = ""


@dataclass(frozen=True)
class CitationMeta:
    title: str
    authors: tuple[Author, ...]
    version: int  # publication version number
    date_published: datetime.date
    url: str  # stable landing page, e.g. https://site/pub/7/v2
    publisher: str = "ReproLab"
    license: str = ""  # SPDX id, e.g. "CC-BY-4.0"
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    doi: str = ""
    key: str = ""  # citation key hint, e.g. "reprolab-pub7-v2"


def valid_orcid(value: str) -> bool:
    """A bare ORCID iD (0000-0000-0000-000X) whose ISO 7064 MOD 11-2 check character is right."""
    if not ORCID_RE.match(value):
        return False
    total = 0
    for digit in value[:-1].replace("-", ""):
        total = (total + int(digit)) * 2
    result = (12 - total % 11) % 11
    return value[-1] == ("X" if result == 10 else str(result))


def bibtex(meta: CitationMeta) -> str:
    """A biblatex `@software` entry (plain BibTeX styles treat it as `@misc`)."""
    _validate(meta)
    fields: list[tuple[str, str]] = [
        ("author", " and ".join(_bibtex_name(a) for a in meta.authors)),
        ("title", "{" + _latex(meta.title) + "}"),  # double braces keep its capitalisation
        ("year", str(meta.date_published.year)),
        ("date", meta.date_published.isoformat()),
        ("version", str(meta.version)),
        ("publisher", _latex(meta.publisher)),
        ("url", _verbatim(meta.url)),
        ("doi", _verbatim(_bare_doi(meta.doi))),
        ("license", _latex(meta.license)),
        ("keywords", _latex(", ".join(_keywords(meta)))),
        ("abstract", _latex(meta.abstract)),
    ]
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields if value)
    return f"@software{{{_bibtex_key(meta)},\n{body}\n}}\n"


def apa(meta: CitationMeta) -> str:
    """APA 7 reference, plain text (the title would be italic in rich text)."""
    _validate(meta)
    names = [_apa_name(a) for a in meta.authors]
    if len(names) > APA_MAX_AUTHORS:
        authors = ", ".join(names[: APA_MAX_AUTHORS - 1]) + ", . . . " + names[-1]
    elif len(names) == 1:
        authors = names[0]
    else:
        authors = ", ".join(names[:-1]) + ", & " + names[-1]
    parts = [
        _end_with_period(authors) + f" ({meta.date_published.year}).",
        f"{_clean(meta.title)} (Version {meta.version}) [Computational notebook].",
    ]
    if _clean(meta.publisher):
        parts.append(_end_with_period(_clean(meta.publisher)))
    doi = _bare_doi(meta.doi)
    parts.append(f"https://doi.org/{doi}" if doi else meta.url.strip())
    return " ".join(parts)


def citation_cff(meta: CitationMeta) -> str:
    """CITATION.cff 1.2.0 YAML for the publication."""
    _validate(meta)
    data: dict[str, Any] = {
        "cff-version": "1.2.0",
        "message": CFF_MESSAGE,
        "type": "software",
        "title": _clean(meta.title),
        "authors": [_cff_person(a) for a in meta.authors],
        "version": str(meta.version),
        "date-released": meta.date_published.isoformat(),
        "url": meta.url.strip(),
    }
    if doi := _bare_doi(meta.doi):
        data["doi"] = doi
    if meta.license.strip():
        data["license"] = meta.license.strip()
    if keywords := _keywords(meta):
        data["keywords"] = keywords
    if meta.abstract.strip():
        data["abstract"] = meta.abstract.strip()
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


def _validate(meta: CitationMeta) -> None:
    if not _clean(meta.title):
        raise ValueError("A citation needs a title.")
    if not meta.authors:
        raise ValueError("A citation needs at least one author.")
    for author in meta.authors:
        if not (_clean(author.family_names) or _clean(author.given_names)):
            raise ValueError("Every author needs a family name or a given name.")
        if author.orcid and not ORCID_RE.match(author.orcid):
            raise ValueError(f"ORCID {author.orcid!r} is not of the form 0000-0000-0000-000X.")
    if not re.match(r"^https?://\S+$", meta.url.strip()):
        raise ValueError(f"The citation URL must be an http(s) URL, not {meta.url!r}.")
    doi = _bare_doi(meta.doi)
    if doi and not _DOI_RE.match(doi):
        raise ValueError(f"{meta.doi!r} is not a DOI (10.<registrant>/<suffix>).")


def _clean(value: str) -> str:
    """Collapse runs of whitespace (newlines included) to one space."""
    return " ".join(value.split())


def _bare_doi(value: str) -> str:
    return _DOI_PREFIX_RE.sub("", value.strip())


def _keywords(meta: CitationMeta) -> list[str]:
    return list(dict.fromkeys(k for k in (_clean(k) for k in meta.keywords) if k))


def _latex(value: str) -> str:
    return _LATEX_SPECIALS_RE.sub(lambda m: _LATEX_ESCAPES[m.group()], _clean(value))


def _verbatim(value: str) -> str:
    """A URL/DOI for a verbatim field: characters that could break out of `{...}` are percent-encoded."""
    return value.strip().replace("\\", "%5C").replace("{", "%7B").replace("}", "%7D").replace(" ", "%20")


def _bibtex_name(author: Author) -> str:
    family, given = _latex(author.family_names), _latex(author.given_names)
    if not family:  # a mononym: braced, so BibTeX does not take it for a family name plus initials
        return "{" + given + "}"
    parts = [family, given] if given else [family]
    # A comma or a free-standing "and" inside a name would split it; braces protect it.
    return ", ".join("{" + p + "}" if re.search(r",|\band\b", p, re.IGNORECASE) else p for p in parts)


def _bibtex_key(meta: CitationMeta) -> str:
    """meta.key, else "<first author><year>-v<version>", reduced to ASCII letters, digits and `_.:-`."""
    if key := _ascii_slug(meta.key):
        return key
    first = meta.authors[0]
    name = _ascii_slug(first.family_names or first.given_names) or "reprolab"
    return f"{name}{meta.date_published.year}-v{meta.version}"


def _ascii_slug(value: str) -> str:
    ascii_value = unicodedata.normalize("NFKD", value.translate(_ASCII_FOLD)).encode("ascii", "ignore").decode()
    return _BIBTEX_KEY_BAD_RE.sub("-", ascii_value).strip("-")


def _apa_name(author: Author) -> str:
    family, initials = _clean(author.family_names), _initials(author.given_names)
    if not family:
        return _clean(author.given_names)
    return f"{family}, {initials}" if initials else family


def _initials(given_names: str) -> str:
    """'Jean-Paul Marie' -> 'J.-P. M.'"""
    words = []
    for word in given_names.split():
        letters = [next((c for c in part if c.isalpha()), "") for part in word.split("-")]
        if initials := "-".join(f"{c.upper()}." for c in letters if c):
            words.append(initials)
    return " ".join(words)


def _end_with_period(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def _cff_person(author: Author) -> dict[str, str]:
    person = {"given-names": _clean(author.given_names), "family-names": _clean(author.family_names)}
    if author.orcid:
        person["orcid"] = f"https://orcid.org/{author.orcid}"
    if author.affiliation.strip():
        person["affiliation"] = _clean(author.affiliation)
    return {k: v for k, v in person.items() if v}
