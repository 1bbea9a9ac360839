"""Name normalisation: every way a Chinese name is written reduces to the same parts."""

from __future__ import annotations

import pytest

from yilian.mpi.matching import reference
from yilian.mpi.matching.comparison import compare_names
from yilian.mpi.matching.names import normalise_name, sound_key

ZHANG_WEI = [
    "张伟",
    "Zhang Wei",
    "ZHANG WEI",
    "Wei Zhang",
    "Zhāng Wěi",
    "zhang1 wei3",
    "Zhang, Wei",
    "zhang wei",
]


@pytest.mark.parametrize("written", ZHANG_WEI)
def test_zhang_wei_in_every_form_is_zhang_and_wei(written: str) -> None:
    name = normalise_name(full=written)
    assert (name.family, name.given) == ("zhang", "wei")


@pytest.mark.parametrize("written", ZHANG_WEI[1:])
def test_zhang_wei_forms_agree_with_the_characters_on_pinyin(written: str) -> None:
    family, given = compare_names(normalise_name(full="张伟"), normalise_name(full=written))
    assert (family, given) == ("pinyin", "pinyin")


def test_separate_fields_in_any_script() -> None:
    assert normalise_name("张", "伟") == normalise_name(full="张伟")
    assert (normalise_name("Zhang", "Xiao-Ming").given, normalise_name("ZHANG", "Xiao Ming").given) == (
        "xiaoming",
        "xiaoming",
    )


@pytest.mark.parametrize("written", ["欧阳修", "Ouyang Xiu", "Ou Yang Xiu", "OUYANG Xiu"])
def test_compound_surname_is_kept_whole(written: str) -> None:
    name = normalise_name(full=written)
    assert (name.family, name.given) == ("ouyang", "xiu")


def test_compound_surnames_split_in_characters() -> None:
    assert normalise_name(full="司马光").family_hanzi == "司马"
    assert normalise_name(full="诸葛亮").family == "zhuge"
    # A name that merely starts with a common given-name pair is not a compound surname.
    assert normalise_name(full="张浩然").family_hanzi == "张"


def test_ou_yangxiu_split_still_matches_ouyang_xiu() -> None:
    assert compare_names(normalise_name("Ou", "Yangxiu"), normalise_name(full="欧阳修")) == (
        "pinyin",
        "pinyin",
    )


@pytest.mark.parametrize(
    ("surname", "reading"),
    [
        ("曾", "zeng"),
        ("单", "shan"),
        ("解", "xie"),
        ("仇", "qiu"),
        ("区", "ou"),
        ("查", "zha"),
        ("朴", "piao"),
    ],
)
def test_polyphonic_surnames_take_their_surname_reading(surname: str, reading: str) -> None:
    assert normalise_name(full=surname + "伟").family == reading
    assert reference.surname_reading(surname) == reading


def test_cheung_wai_is_close_to_zhang_wei() -> None:
    family, given = compare_names(normalise_name(full="张伟"), normalise_name(full="Cheung Wai"))
    assert family == "romanisation"
    assert given in ("romanisation", "close")


@pytest.mark.parametrize(
    ("spelling", "pinyin"),
    [("Hsieh", "xie"), ("Cheung", "zhang"), ("Ng", "wu"), ("Chan", "chen"), ("Kwok", "guo")],
)
def test_certain_romanisations_resolve_to_the_pinyin_surname(spelling: str, pinyin: str) -> None:
    name = normalise_name(spelling, "Ming")
    assert name.family_key == pinyin
    family, _ = compare_names(name, normalise_name(full="谢明" if pinyin == "xie" else "张明"))
    if pinyin in ("xie", "zhang"):
        assert family == "romanisation"


def test_uncertain_romanisation_is_not_resolved() -> None:
    weak = [s for s, r in reference.romanisations().items() if not r.certain]
    assert weak
    assert normalise_name(weak[0], "Ming").family_alt == ""


def test_wade_giles_given_names_sound_like_pinyin() -> None:
    assert sound_key("hsiaoming") == sound_key("xiaoming")
    assert sound_key("chihchiang") == sound_key("zhiqiang")
    assert compare_names(normalise_name("Hsieh", "Hsiao-ming"), normalise_name(full="谢晓明")) == (
        "romanisation",
        "romanisation",
    )


def test_homophone_and_look_alike_slips() -> None:
    assert compare_names(normalise_name(full="张伟"), normalise_name(full="张玮")) == ("exact", "pinyin")
    assert compare_names(normalise_name(full="王明"), normalise_name(full="玉明")) == ("close", "exact")
    assert compare_names(normalise_name(full="李末华"), normalise_name(full="李未华"))[1] == "close"


def test_siblings_sharing_a_character_are_only_partial() -> None:
    assert compare_names(normalise_name(full="张明华"), normalise_name(full="张明军")) == ("exact", "partial")


def test_western_names() -> None:
    assert compare_names(normalise_name("Smith", "John"), normalise_name("Smyth", "Jon"))[0] == "romanisation"
    assert compare_names(normalise_name("Harrington", "Kayla"), normalise_name("Harringtom", "Kayla")) == (
        "close",
        "exact",
    )
    assert compare_names(normalise_name("Berry", "Lachlan"), normalise_name("Lachlan", "Berry")) == (
        "exact",
        "exact",
    )
    name = normalise_name(full="John Smith")
    assert (name.family, name.given) == ("smith", "john")


def test_surname_frequency_orders_common_below_rare() -> None:
    ppm = reference.surname_pinyin_ppm()
    assert ppm["wang"] > ppm["li"] / 2 > ppm["ouyang"]
    for common in ("wang", "li", "zhang", "liu", "chen"):
        assert ppm[common] > 30_000
