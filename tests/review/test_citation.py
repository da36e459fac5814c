"""Citation formats for a publication: BibTeX escaping, APA 7 author rules, CFF against the official schema."""

import datetime
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator, FormatChecker  # type: ignore[import-untyped]

from apps.review.citation import Author, CitationMeta, apa, bibtex, citation_cff, valid_orcid

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "citation-cff-1.2.0.schema.json"

ADA = Author("Ada", "Lovelace", orcid="0000-0002-1825-0097", affiliation="Analytical Engine Society")
JP = Author("Jean-Paul Marie", "Sartre")
ZOE = Author("Zoë", "Łukasz-Żółć", orcid="0000-0001-5109-3700")


def make_meta(**overrides) -> CitationMeta:
    meta = CitationMeta(
        title="Reproducible Notebooks at Scale",
        authors=(ADA,),
        version=2,
        date_published=datetime.date(2026, 3, 14),
        url="https://reprolab.example/pub/7/v2",
        license="CC-BY-4.0",
        abstract="We re-run every cell.\nTwice.",
        keywords=("reproducibility", "Jupyter", "reproducibility"),
        key="reprolab-pub7-v2",
    )
    return replace(meta, **overrides)


def bib_field(entry: str, name: str) -> str:
    match = re.search(rf"^  {name} = \{{(.*)\}},?$", entry, re.MULTILINE)
    assert match, f"no {name} field in {entry}"
    return match.group(1)


# --- BibTeX ------------------------------------------------------------------------------------


def test_bibtex_escapes_every_latex_special_and_keeps_braces_balanced():
    hostile = "50% of {Cats} & $dogs_ \\ ~ #1 ^up"
    entry = bibtex(make_meta(title=hostile, publisher="R&D_Lab", keywords=("a_b", "100%")))
    title = bib_field(entry, "title")
    assert title == (
        r"{50\% of \textbraceleft{}Cats\textbraceright{} \& \$dogs\_ \textbackslash{} "
        r"\textasciitilde{} \#1 \textasciicircum{}up}"
    )
    assert bib_field(entry, "publisher") == r"R\&D\_Lab"
    assert bib_field(entry, "keywords") == r"a\_b, 100\%"
    # BibTeX counts braces even after a backslash: the entry must stay balanced at every prefix.
    depth = 0
    for char in entry:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0
    # No raw special survives outside an escape.
    unescaped = re.sub(r"\\(textbraceleft|textbraceright|textbackslash|textasciitilde|textasciicircum)\{\}", "", title)
    assert not re.search(r"(?<!\\)[%&$#_]", unescaped)


def test_unbalanced_brace_in_title_cannot_break_the_entry():
    entry = bibtex(make_meta(title="Oops } @misc{evil, title={pwned"))
    assert entry.startswith("@software{reprolab-pub7-v2,\n")
    assert entry.count("{") == entry.count("}")
    assert "@misc{" not in entry.replace(r"\textbraceleft{}", "")


def test_bibtex_fields_and_author_join():
    entry = bibtex(make_meta(authors=(ADA, JP, ZOE), doi="https://doi.org/10.5281/zenodo.1003150"))
    assert entry.startswith("@software{reprolab-pub7-v2,\n")
    assert entry.endswith("}\n")
    assert bib_field(entry, "author") == "Lovelace, Ada and Sartre, Jean-Paul Marie and Łukasz-Żółć, Zoë"
    assert bib_field(entry, "title") == "{Reproducible Notebooks at Scale}"
    assert bib_field(entry, "year") == "2026"
    assert bib_field(entry, "date") == "2026-03-14"
    assert bib_field(entry, "version") == "2"
    assert bib_field(entry, "publisher") == "ReproLab"
    assert bib_field(entry, "url") == "https://reprolab.example/pub/7/v2"
    assert bib_field(entry, "doi") == "10.5281/zenodo.1003150"
    assert bib_field(entry, "license") == "CC-BY-4.0"
    assert bib_field(entry, "keywords") == "reproducibility, Jupyter"
    assert bib_field(entry, "abstract") == "We re-run every cell. Twice."


def test_bibtex_omits_empty_fields_and_protects_names_with_and_or_commas():
    meta = make_meta(
        authors=(Author("Anders", "Sand and Stone"), Author("Jr", "King, Martin"), Author("Plato", "")),
        license="",
        abstract="",
        keywords=(),
    )
    entry = bibtex(meta)
    assert bib_field(entry, "author") == "{Sand and Stone}, Anders and {King, Martin}, Jr and {Plato}"
    for absent in ("doi", "license", "keywords", "abstract"):
        assert f"  {absent} = " not in entry


def test_bibtex_url_is_percent_encoded_not_latex_escaped():
    entry = bibtex(make_meta(url="https://reprolab.example/pub/7/v2?a_b=1&c={x}"))
    assert bib_field(entry, "url") == "https://reprolab.example/pub/7/v2?a_b=1&c=%7Bx%7D"


@pytest.mark.parametrize(
    ("key", "authors", "expected"),
    [
        ("reprolab-pub7-v2", (ADA,), "reprolab-pub7-v2"),
        ("bad key, {with} braces", (ADA,), "bad-key-with-braces"),
        ("", (ADA,), "Lovelace2026-v2"),
        ("", (ZOE,), "Lukasz-Zolc2026-v2"),
        ("", (Author("", "李"),), "reprolab2026-v2"),
    ],
)
def test_bibtex_key_is_always_valid(key, authors, expected):
    entry = bibtex(make_meta(key=key, authors=authors))
    found = entry.split("{", 1)[1].split(",", 1)[0]
    assert found == expected
    assert re.fullmatch(r"[A-Za-z0-9_.:-]+", found)


# --- APA 7 -------------------------------------------------------------------------------------


def test_apa_single_author_with_url():
    assert apa(make_meta()) == (
        "Lovelace, A. (2026). Reproducible Notebooks at Scale (Version 2) [Computational notebook]. "
        "ReproLab. https://reprolab.example/pub/7/v2"
    )


def test_apa_two_authors_use_comma_ampersand_and_doi_wins_over_url():
    text = apa(make_meta(authors=(ADA, JP), doi="10.5281/zenodo.1003150"))
    assert text == (
        "Lovelace, A., & Sartre, J.-P. M. (2026). Reproducible Notebooks at Scale (Version 2) "
        "[Computational notebook]. ReproLab. https://doi.org/10.5281/zenodo.1003150"
    )
    assert "reprolab.example" not in text


def test_apa_three_authors_and_unicode_initials():
    text = apa(make_meta(authors=(ADA, JP, ZOE)))
    assert text.startswith("Lovelace, A., Sartre, J.-P. M., & Łukasz-Żółć, Z. (2026). ")


def test_apa_hyphenated_and_already_initialled_given_names():
    authors = (Author("jean-paul", "Sartre"), Author("J. R. R.", "Tolkien"), Author("Anne-Marie Louise", "Slaughter"))
    assert apa(make_meta(authors=authors)).startswith("Sartre, J.-P., Tolkien, J. R. R., & Slaughter, A.-M. L. (2026).")


def test_apa_more_than_twenty_authors_lists_nineteen_an_ellipsis_and_the_last():
    authors = tuple(Author(f"Given{i}", f"Family{i}") for i in range(1, 22))
    text = apa(make_meta(authors=authors))
    names = ", ".join(f"Family{i}, G." for i in range(1, 20))
    assert text.startswith(f"{names}, . . . Family21, G. (2026). ")
    assert "Family20" not in text
    assert "&" not in text


def test_apa_exactly_twenty_authors_lists_all_of_them():
    authors = tuple(Author(f"Given{i}", f"Family{i}") for i in range(1, 21))
    text = apa(make_meta(authors=authors))
    assert ", & Family20, G. (2026)." in text
    assert ". . ." not in text


def test_apa_mononym_and_publisher_punctuation():
    text = apa(make_meta(authors=(Author("Plato", ""),), publisher="Acme Inc."))
    assert text.startswith("Plato. (2026). ")
    assert " Acme Inc. https://" in text


# --- CITATION.cff ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cff_validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    assert schema["$id"] == "https://citation-file-format.github.io/1.2.0/schema"
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=FormatChecker())


def assert_valid(validator: Draft7Validator, data: dict) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
    assert not errors, errors


def test_cff_is_valid_against_the_official_schema(cff_validator):
    text = citation_cff(make_meta(authors=(ADA, JP, ZOE), doi="doi:10.5281/zenodo.1003150"))
    data = yaml.safe_load(text)
    assert_valid(cff_validator, data)
    assert data["cff-version"] == "1.2.0"
    assert data["type"] == "software"
    assert data["title"] == "Reproducible Notebooks at Scale"
    assert data["version"] == "2"
    assert data["date-released"] == "2026-03-14"
    assert data["url"] == "https://reprolab.example/pub/7/v2"
    assert data["doi"] == "10.5281/zenodo.1003150"
    assert data["license"] == "CC-BY-4.0"
    assert data["keywords"] == ["reproducibility", "Jupyter"]
    assert data["abstract"] == "We re-run every cell.\nTwice."
    assert data["authors"] == [
        {
            "given-names": "Ada",
            "family-names": "Lovelace",
            "orcid": "https://orcid.org/0000-0002-1825-0097",
            "affiliation": "Analytical Engine Society",
        },
        {"given-names": "Jean-Paul Marie", "family-names": "Sartre"},
        {"given-names": "Zoë", "family-names": "Łukasz-Żółć", "orcid": "https://orcid.org/0000-0001-5109-3700"},
    ]
    assert list(data)[:3] == ["cff-version", "message", "type"]
    assert "Zoë" in text  # allow_unicode: no \u escapes
    assert "Łukasz-Żółć" in text


def test_minimal_cff_is_valid_and_omits_unset_fields(cff_validator):
    meta = make_meta(license="", abstract="", keywords=(), authors=(Author("Plato", ""),))
    data = yaml.safe_load(citation_cff(meta))
    assert_valid(cff_validator, data)
    assert data["authors"] == [{"given-names": "Plato"}]
    for absent in ("doi", "license", "keywords", "abstract"):
        assert absent not in data


def test_cff_with_hostile_title_is_still_valid_yaml(cff_validator):
    title = "50% of {Cats} & $dogs_ \\ ~: - [x] #not-a-comment"
    data = yaml.safe_load(citation_cff(make_meta(title=title)))
    assert data["title"] == title
    assert_valid(cff_validator, data)


def test_the_schema_rejects_a_bare_orcid(cff_validator):
    """Guards the fixture: a bare iD is not a valid CFF orcid, which is why we prefix it."""
    data = yaml.safe_load(citation_cff(make_meta()))
    data["authors"][0]["orcid"] = "0000-0002-1825-0097"
    assert list(cff_validator.iter_errors(data))


# --- ORCID and validation ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0000-0002-1825-0097", "0000-0001-5109-3700", "0000-0002-1694-233X"])
def test_valid_orcid(value):
    assert valid_orcid(value)


@pytest.mark.parametrize(
    "value",
    [
        "0000-0002-1825-0098",  # wrong check digit
        "0000-0001-5109-3701",
        "0000-0002-1694-2339",
        "0000-0002-1694-233x",  # lower-case check character
        "0000000218250097",
        "0000-0002-1825-009",
        "https://orcid.org/0000-0002-1825-0097",
        " 0000-0002-1825-0097",
        "",
    ],
)
def test_invalid_orcid(value):
    assert not valid_orcid(value)


@pytest.mark.parametrize("render", [bibtex, apa, citation_cff])
def test_no_authors_is_a_value_error(render):
    with pytest.raises(ValueError, match="at least one author"):
        render(make_meta(authors=()))


@pytest.mark.parametrize("render", [bibtex, apa, citation_cff])
def test_blank_title_is_a_value_error(render):
    with pytest.raises(ValueError, match="title"):
        render(make_meta(title="  \n "))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"authors": (Author("Ada", "Lovelace", orcid="https://orcid.org/0000-0002-1825-0097"),)}, "ORCID"),
        ({"authors": (Author(" ", ""),)}, "family name or a given name"),
        ({"url": "reprolab.example/pub/7"}, "http"),
        ({"doi": "not-a-doi"}, "DOI"),
    ],
)
def test_bad_inputs_are_value_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        citation_cff(make_meta(**overrides))
