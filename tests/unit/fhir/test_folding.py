"""The folding that string and ``_content`` search compare by: case and accents ignored,
whitespace collapsed, so ``Zhāng`` finds ``ZHANG`` and ``Müller`` finds ``muller``."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from yilian.fhir.search.values import MAX_INDEXED_STRING, fold, fold_unbounded


def by_definition(text: str) -> str:
    """Compatibility decomposition, every character of a non-zero combining class dropped,
    case folded, runs of whitespace made one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(kept.casefold().split())


def test_names_fold_as_searched() -> None:
    assert fold("Zhāng  Wěi") == "zhang wei"
    assert fold("Müller-Lüdenscheidt") == "muller-ludenscheidt"
    assert fold("张伟 ＡＢＣ") == "张伟 abc"  # full-width Latin as typed on a Chinese keyboard
    assert fold("Ǹg\u0301") == "ng"
    assert fold("Straße") == "strasse"


@given(st.text(max_size=60))
def test_folding_is_the_definition_for_any_text(text: str) -> None:
    assert fold_unbounded(text) == by_definition(text)
    assert fold(text) == by_definition(text)[:MAX_INDEXED_STRING]


@given(st.text(alphabet=st.characters(categories=["Mn", "Mc", "Me", "Lo", "Ll", "Zs"]), max_size=80))
def test_no_combining_mark_survives(text: str) -> None:
    assert not any(unicodedata.combining(ch) for ch in fold_unbounded(text))
