"""Usernames that look alike: NFKC plus the Unicode TR39 confusables skeleton.

TR39 defines `skeleton(X) = NFD(map(NFD(X)))`, where `map` replaces each character by its
prototype from Unicode's confusables.txt; two strings are confusable when their skeletons are
equal. The table comes from `confusable_homoglyphs` (the library django-registration uses for
usernames), which stores confusables.txt as a two-way graph: a source character lists its one
prototype, a prototype lists its sources. Reading it back into `source -> prototype` is
exact except where a prototype has a single source (the two list each other); there either one
serves as the key, since only equality of skeletons matters.
"""

import functools
import hashlib
import unicodedata

from confusable_homoglyphs import confusables as homoglyphs

# The table quotes right-to-left characters between LEFT-TO-RIGHT MARKs (from the comments of
# confusables.txt); they are not part of the character.
_BIDI_MARKS = str.maketrans("", "", "\u200e\u200f")


@functools.cache
def _prototypes() -> dict[str, str]:
    graph = {
        key.translate(_BIDI_MARKS): [entry["c"].translate(_BIDI_MARKS) for entry in entries]
        for key, entries in homoglyphs.confusables_data.items()
    }
    table: dict[str, str] = {}
    for char, linked in graph.items():
        if len(char) != 1 or len(linked) != 1:
            continue  # a prototype with several sources maps to itself
        (other,) = linked
        if len(other) != 1 or len(graph.get(other, ())) > 1:
            table[char] = other  # a source: its prototype is a sequence, or has other sources
        elif graph.get(other) == [char]:
            table[char] = min(char, other)  # a prototype with one source: either is the key
    return table


def skeleton(text: str) -> str:
    """The TR39 skeleton of `text` (case is kept, as TR39 does)."""
    table = _prototypes()
    mapped = "".join(table.get(char, char) for char in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


def username_keys(username: str) -> tuple[str, str]:
    """The keys a username is compared by: the sha256 of its skeleton and of its case-folded
    form's skeleton (a digest, so the indexed value stays short: a skeleton can be 21 bytes per
    character of the name).

    Both are needed: TR39 confuses capital `I` with `l` (so `aIice` is `alice`) but not `i`
    with `l`, and folding case first would lose that; folding catches `\u0410LICE` (a Cyrillic capital A)
    beside `alice`, which the plain skeleton keeps apart.
    """
    normal = unicodedata.normalize("NFKC", username)
    plain = skeleton(normal)
    folded = skeleton(unicodedata.normalize("NFKC", normal.casefold()))
    return _digest(plain), _digest(folded)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
