"""Sealing sensitive values in stored FHIR JSON (``yilian.fhir.store.sealing``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.paths import SHARED
from yilian.demo import build_demo_region
from yilian.fhir.store import sealing
from yilian.fhir.store.sealing import blind_candidates, blind_token, reencrypt, scrub_text, seal, unseal
from yilian.kernel import naming
from yilian.kernel.crypto import DecryptionError, Keyring, is_token

Json = dict[str, Any]
EXAMPLES = SHARED / "fhir-r4-examples"

ID_NUMBER = "11010519491231002X"
HEALTH_CARD = "3305008863699749"
MOBILE = "13800138000"


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate()


def example(name: str) -> Json:
    doc: Json = orjson.loads((EXAMPLES / name).read_bytes())
    return doc


def stored(resource: Json, keyring: Keyring) -> bytes:
    return orjson.dumps(seal(resource, keyring).resource)


def assert_round_trip(resource: Json, keyring: Keyring) -> bytes:
    """Seals ``resource``, checks nothing found is left in the stored bytes and that reading
    them back gives exactly what was written; returns the stored bytes."""
    written = orjson.dumps(resource)
    result = seal(resource, keyring)
    content = orjson.dumps(result.resource)
    assert orjson.dumps(resource) == written, "seal() must not touch the caller's resource"
    for plaintext in result.plaintexts:
        assert plaintext.encode() not in content, plaintext
    assert unseal(content, keyring) == written
    return content


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def identifier(system: str, value: str) -> Json:
    return {"system": system, "value": value}


# ---------------------------------------------------------------------------- every location

LOCATIONS: dict[str, tuple[Callable[[str], Json], str]] = {
    "Patient.identifier (PRC resident ID)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.PRC_RESIDENT_ID, v)]},
        ID_NUMBER,
    ),
    "Patient.identifier (health card)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.HEALTH_CARD, v)]},
        HEALTH_CARD,
    ),
    "Patient.identifier (passport CHN)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.PASSPORT_CHN, v)]},
        "E12345678",
    ),
    "Patient.identifier (passport of another country)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.passport_system("USA"), v)]},
        "561234567",
    ),
    "Patient.identifier (HK/Macao permit)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.HK_MACAO_PERMIT, v)]},
        "H12345678",
    ),
    "Patient.identifier (Taiwan permit)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.TAIWAN_PERMIT, v)]},
        "87654321",
    ),
    "Patient.identifier (phone identifier system)": (
        lambda v: {"resourceType": "Patient", "identifier": [identifier(naming.PHONE, v)]},
        MOBILE,
    ),
    "Patient.telecom phone": (
        lambda v: {"resourceType": "Patient", "telecom": [{"system": "phone", "value": v, "use": "mobile"}]},
        "+86 138-0013-8000",
    ),
    "Patient.telecom sms": (
        lambda v: {"resourceType": "Patient", "telecom": [{"system": "sms", "value": v}]},
        MOBILE,
    ),
    "Patient.contact[].telecom": (
        lambda v: {
            "resourceType": "Patient",
            "contact": [{"name": {"text": "王芳"}, "telecom": [{"system": "phone", "value": v}]}],
        },
        "13912345678",
    ),
    "Patient.link.other.identifier (Reference.identifier)": (
        lambda v: {
            "resourceType": "Patient",
            "link": [{"other": {"identifier": identifier(naming.PRC_RESIDENT_ID, v)}, "type": "seealso"}],
        },
        ID_NUMBER,
    ),
    "extension valueContactPoint": (
        lambda v: {
            "resourceType": "Patient",
            "extension": [
                {"url": "http://example.org/emergency", "valueContactPoint": {"system": "phone", "value": v}}
            ],
        },
        MOBILE,
    ),
    "extension valueIdentifier": (
        lambda v: {
            "resourceType": "Patient",
            "extension": [
                {
                    "url": "http://example.org/mother-id",
                    "valueIdentifier": identifier(naming.PRC_RESIDENT_ID, v),
                }
            ],
        },
        ID_NUMBER,
    ),
    "contained RelatedPerson": (
        lambda v: {
            "resourceType": "Patient",
            "contained": [
                {
                    "resourceType": "RelatedPerson",
                    "id": "m",
                    "patient": {"reference": "#"},
                    "telecom": [{"system": "phone", "value": v}],
                }
            ],
        },
        MOBILE,
    ),
    "Practitioner": (
        lambda v: {"resourceType": "Practitioner", "identifier": [identifier(naming.PRC_RESIDENT_ID, v)]},
        ID_NUMBER,
    ),
    "RelatedPerson": (
        lambda v: {
            "resourceType": "RelatedPerson",
            "patient": {"reference": "Patient/1"},
            "telecom": [{"system": "phone", "value": v}],
        },
        MOBILE,
    ),
    "Person": (
        lambda v: {"resourceType": "Person", "identifier": [identifier(naming.PRC_RESIDENT_ID, v)]},
        ID_NUMBER,
    ),
    "Organization.contact[].telecom": (
        lambda v: {
            "resourceType": "Organization",
            "contact": [{"telecom": [{"system": "phone", "value": v}]}],
        },
        "0572-3252438",
    ),
    "Bundle entry": (
        lambda v: {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [identifier(naming.PRC_RESIDENT_ID, v)],
                    }
                }
            ],
        },
        ID_NUMBER,
    ),
}


@pytest.mark.parametrize("where", list(LOCATIONS))
def test_every_sensitive_location(keyring: Keyring, where: str) -> None:
    build, value = LOCATIONS[where]
    resource = build(value)
    result = seal(resource, keyring)
    assert result.sealed and result.plaintexts == (value,)
    content = assert_round_trip(resource, keyring)
    assert value.encode() not in content
    assert content.count(b"ylenc:") == 1


def test_values_that_are_not_sensitive_stay(keyring: Keyring) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [identifier(naming.mrn_system("123305031031238631"), "58412927")],
        "telecom": [
            {"system": "email", "value": "a@example.cn"},
            {"system": "url", "value": "https://example.cn"},
        ],
    }
    result = seal(patient, keyring)
    assert not result.sealed and result.resource is patient and result.found == ()


# ---------------------------------------------------------------------------- real shapes


@pytest.mark.parametrize(
    "name",
    [
        "patient-example.json",
        "patient-example-chinese.json",
        "practitioner-example-f001-evdb.json",
        "practitioner-examples-general.json",
        "relatedperson-example.json",
        "relatedperson-example-f001-sarah.json",
        "person-example-f002-ariadne.json",
        "organization-example-f201-aumc.json",
        "document-example-dischargesummary.json",
    ],
)
def test_official_examples_with_phones(keyring: Keyring, name: str) -> None:
    resource = example(name)
    assert seal(resource, keyring).sealed
    assert_round_trip(resource, keyring)


def test_narrative_of_a_resource_with_sensitive_values_is_sealed(keyring: Keyring) -> None:
    patient = example("patient-example-chinese.json")
    assert "18337177888" in patient["text"]["div"]
    sealed = seal(patient, keyring).resource
    assert is_token(sealed["text"]["div"]) and sealed["text"]["status"] == "generated"
    assert is_token(sealed["telecom"][1]["value"])
    # Everything else is as it was.
    assert sealed["name"] == patient["name"] and sealed["identifier"] == patient["identifier"]
    assert b"18337177888" not in orjson.dumps(sealed)


def test_narrative_of_a_resource_without_sensitive_values_is_not(keyring: Keyring) -> None:
    observation = example("observation-example-bloodpressure.json")
    result = seal(observation, keyring)
    assert not result.sealed and result.resource is observation


def test_contained_sensitive_value_seals_the_container_narrative(keyring: Keyring) -> None:
    patient = {
        "resourceType": "Patient",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Mother: 13800138000</div>',
        },
        "contained": [
            {
                "resourceType": "RelatedPerson",
                "id": "m",
                "patient": {"reference": "#"},
                "telecom": [{"system": "phone", "value": MOBILE}],
            }
        ],
    }
    sealed = seal(patient, keyring).resource
    assert is_token(sealed["text"]["div"])
    assert_round_trip(patient, keyring)


def test_values_repeated_elsewhere_are_sealed_too(keyring: Keyring) -> None:
    # A hospital that uses the ID number as its MRN, a note, and a document's section narrative
    # written with separators and full-width digits.
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            identifier(naming.PRC_RESIDENT_ID, ID_NUMBER),
            identifier(naming.mrn_system("123305031031238631"), ID_NUMBER.lower()),
        ],
        "telecom": [{"system": "phone", "value": MOBILE}],
    }
    composition = {
        "resourceType": "Composition",
        "section": [
            {
                "title": "联系方式",
                "text": {"status": "generated", "div": "<div>电话：<b>138</b>-0013-8000</div>"},
            },
            {
                "title": "证件",
                "text": {
                    "status": "generated",
                    "div": "<div>身份证 １１０１０５１９４９１２３１００２Ｘ</div>",
                },
            },
            {
                "title": "other",
                "text": {"status": "generated", "div": "<div>nothing to hide 2026-12-03</div>"},
            },
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [{"resource": composition}, {"resource": patient}],
    }
    sealed = seal(bundle, keyring).resource
    sections = sealed["entry"][0]["resource"]["section"]
    assert is_token(sections[0]["text"]["div"]) and is_token(sections[1]["text"]["div"])
    assert sections[2]["text"]["div"] == "<div>nothing to hide 2026-12-03</div>"
    assert is_token(sealed["entry"][1]["resource"]["identifier"][1]["value"])
    assert sealed["entry"][1]["resource"]["id"] == "p1"  # ids are never rewritten
    assert_round_trip(bundle, keyring)


def test_demo_region(keyring: Keyring) -> None:
    bundles = build_demo_region(residents=20).bundles()
    sealed_types: set[str] = set()
    patients = with_id_number = 0
    for bundle in bundles:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            result = seal(resource, keyring)
            if resource["resourceType"] == "Patient":
                patients += 1
                assert result.sealed  # every demo resident has an ID number or a phone
                with_id_number += any(f.kind == "prc-id" for f in result.found)
            if result.sealed:
                sealed_types.add(resource["resourceType"])
            assert_round_trip(resource, keyring)
        # The transaction bundle as a whole, too.
        content = assert_round_trip(bundle, keyring)
        for entry in bundle["entry"]:
            for ident in entry["resource"].get("identifier", []):
                if sealing.identifier_kind(ident["system"]):
                    assert ident["value"].encode() not in content
    assert patients == 23 and with_id_number >= 20
    assert sealed_types == {"Patient", "RelatedPerson", "Organization", "PractitionerRole"}


def official_examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def test_all_official_examples_round_trip(keyring: Keyring) -> None:
    files = official_examples()
    assert len(files) == 444
    sealed = 0
    for path in files:
        resource: Json = orjson.loads(path.read_bytes())
        result = seal(resource, keyring)
        sealed += result.sealed
        if not result.sealed:
            assert result.resource is resource
        assert_round_trip(resource, keyring)
        # unseal(seal(x)) == x as JSON, not only as orjson bytes
        assert json.loads(unseal(stored(resource, keyring), keyring)) == json.loads(path.read_bytes())
    assert sealed >= 30  # every example with a phone number


# ---------------------------------------------------------------------------- copy only when needed


def test_seal_copies_only_when_it_must(keyring: Keyring) -> None:
    observation = example("observation-example.json")
    result = seal(observation, keyring)
    assert result.resource is observation and not result.sealed and result.found == ()

    patient = example("patient-example.json")
    before = copy.deepcopy(patient)
    result = seal(patient, keyring)
    assert result.sealed and result.resource is not patient
    assert patient == before  # the caller's dict is untouched
    # Copy on write: what held nothing sensitive is shared, what did is new.
    assert result.resource["name"] is patient["name"]
    assert result.resource["telecom"] is not patient["telecom"]
    assert result.resource["text"] is not patient["text"]


def test_a_mention_of_a_sensitive_system_without_a_value_is_not_sealed(keyring: Keyring) -> None:
    value_set = {
        "resourceType": "ValueSet",
        "compose": {"include": [{"system": naming.PRC_RESIDENT_ID}]},
        "telecom-like": [{"system": "phone"}],
    }
    result = seal(value_set, keyring)
    assert not result.sealed and result.resource is value_set


# ---------------------------------------------------------------------------- planted tokens


def test_planted_token_is_not_decrypted_for_the_client(keyring: Keyring) -> None:
    # A token copied from a stolen backup, posted back in a field of the attacker's own resource.
    stolen = seal(
        {"resourceType": "Patient", "identifier": [identifier(naming.PRC_RESIDENT_ID, ID_NUMBER)]}, keyring
    )
    token = stolen.resource["identifier"][0]["value"]
    planted = {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": token},
        "name": [{"text": token, "given": [token]}],
        "identifier": [identifier(naming.PRC_RESIDENT_ID, token)],
    }
    result = seal(planted, keyring)
    assert result.sealed
    read_back = orjson.loads(unseal(orjson.dumps(result.resource), keyring))
    assert read_back == planted  # the client gets its token back, never the ID number
    assert ID_NUMBER not in orjson.dumps(read_back).decode()


# ---------------------------------------------------------------------------- failures


def test_tampered_token_in_storage_is_refused(keyring: Keyring) -> None:
    content = stored({"resourceType": "Patient", "telecom": [{"system": "phone", "value": MOBILE}]}, keyring)
    start = content.index(b"ylenc:k1:") + len(b"ylenc:k1:") + 10
    tampered = content[:start] + (b"A" if content[start : start + 1] != b"A" else b"B") + content[start + 1 :]
    with pytest.raises(DecryptionError, match="failed authentication"):
        unseal(tampered, keyring)


def test_unknown_key_in_storage_is_refused(keyring: Keyring) -> None:
    other = Keyring.generate(key_id="k7")
    content = stored({"resourceType": "Patient", "telecom": [{"system": "phone", "value": MOBILE}]}, other)
    with pytest.raises(DecryptionError, match="'k7'"):
        unseal(content, keyring)


# ---------------------------------------------------------------------------- reading back


def test_unseal_leaves_unsealed_bytes_untouched(keyring: Keyring) -> None:
    content = orjson.dumps(example("observation-example.json"))
    assert unseal(content, keyring) is content


def test_unseal_when_text_mentions_the_prefix(keyring: Keyring) -> None:
    # "ylenc:" inside some text is not a token: the bytes path steps aside for the parser.
    patient = {
        "resourceType": "Patient",
        "name": [{"text": 'the prefix "ylenc:k1:' + "A" * 40 + '" is ours'}],
        "telecom": [{"system": "phone", "value": MOBILE}],
    }
    assert_round_trip(patient, keyring)


def test_unseal_content_not_written_by_orjson(keyring: Keyring) -> None:
    patient = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": MOBILE}]}
    pretty = json.dumps(seal(patient, keyring).resource, indent=2).encode()
    assert json.loads(unseal(pretty, keyring)) == patient


def test_unseal_resource_in_place(keyring: Keyring) -> None:
    patient = example("patient-example.json")
    doc = orjson.loads(stored(patient, keyring))
    assert sealing.unseal_resource(doc, keyring) == patient


# ---------------------------------------------------------------------------- rotation


def test_rotation_reencrypts_old_tokens(keyring: Keyring) -> None:
    patient = example("patient-example.json")
    written = orjson.dumps(patient)
    old_content = stored(patient, keyring)
    rotated = keyring.with_new_current_key()
    # During rotation, rows not yet re-encrypted read fine with the new keyring.
    assert unseal(old_content, rotated) == written
    new_content = reencrypt(old_content, rotated)
    assert new_content is not None
    assert b"ylenc:k1:" not in new_content and new_content.count(b"ylenc:k2:") == old_content.count(
        b"ylenc:k1:"
    )
    assert unseal(new_content, rotated) == written
    assert reencrypt(new_content, rotated) is None  # done
    assert reencrypt(orjson.dumps(example("observation-example.json")), rotated) is None  # nothing sealed
    # After the old key is retired, only re-encrypted rows open.
    retired = rotated.without_key("k1")
    assert unseal(new_content, retired) == written
    with pytest.raises(DecryptionError):
        unseal(old_content, retired)


def test_rotation_of_content_not_written_by_orjson(keyring: Keyring) -> None:
    patient = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": MOBILE}]}
    pretty = json.dumps(seal(patient, keyring).resource, indent=1).encode()
    rotated = keyring.with_new_current_key()
    new_content = reencrypt(pretty, rotated)
    assert new_content is not None and b"ylenc:k1:" not in new_content
    assert orjson.loads(unseal(new_content, rotated)) == patient


def test_wrapped_tokens_rotate_with_their_wrapper(keyring: Keyring) -> None:
    token = keyring.encrypt("whatever", context="elsewhere")
    planted = {"resourceType": "Patient", "name": [{"text": token}]}
    content = stored(planted, keyring)
    rotated = keyring.with_new_current_key()
    new_content = reencrypt(content, rotated)
    assert new_content is not None
    assert orjson.loads(unseal(new_content, rotated)) == planted


# ---------------------------------------------------------------------------- blind index


def test_blind_token_for_sensitive_systems(keyring: Keyring) -> None:
    a = blind_token(naming.PRC_RESIDENT_ID, ID_NUMBER, keyring)
    assert a is not None and a.startswith("hmac:") and ID_NUMBER not in a
    assert blind_token(naming.PRC_RESIDENT_ID, ID_NUMBER.lower(), keyring) == a
    assert blind_token("prc-id", ID_NUMBER, keyring) == a
    assert blind_token("phone", "+86 138-0013-8000", keyring) == blind_token("sms", MOBILE, keyring)
    assert blind_token(naming.PHONE, MOBILE, keyring) == blind_token("phone", MOBILE, keyring)
    assert blind_token(naming.passport_system("FRA"), "12ab34567", keyring) == blind_token(
        naming.passport_system("FRA"), "12AB34567", keyring
    )
    assert blind_token(naming.mrn_system("123305031031238631"), "58412927", keyring) is None
    assert blind_token("email", "a@example.cn", keyring) is None
    assert blind_token(naming.PRC_RESIDENT_ID, ID_NUMBER, Keyring.generate()) != a


def test_blind_candidates_cover_every_kind(keyring: Keyring) -> None:
    candidates = blind_candidates(MOBILE, keyring)
    assert blind_token("phone", MOBILE, keyring) in candidates
    assert blind_token(naming.PRC_RESIDENT_ID, MOBILE, keyring) in candidates
    assert blind_token(naming.HK_MACAO_PERMIT, MOBILE, keyring) in candidates


def test_found_values_feed_the_blind_index(keyring: Keyring) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [identifier(naming.PRC_RESIDENT_ID, ID_NUMBER.lower())],
        "telecom": [{"system": "phone", "value": "+86 138 0013 8000"}],
    }
    found = seal(patient, keyring).found
    assert [(f.kind, f.plaintext) for f in found] == [
        ("prc-id", ID_NUMBER.lower()),
        ("phone", "+86 138 0013 8000"),
    ]
    assert {keyring.blind(f.plaintext, kind=f.kind) for f in found} == {
        blind_token(naming.PRC_RESIDENT_ID, ID_NUMBER, keyring),
        blind_token("phone", MOBILE, keyring),
    }


# ---------------------------------------------------------------------------- search text


def test_scrub_text() -> None:
    text = "Zhang San 11010519491231002x mobile +86 138-0013-8000, home <b>138</b> 0013 8000, MRN 58412927"
    scrubbed = scrub_text(text, [ID_NUMBER, "13800138000"])
    assert "1101051949" not in scrubbed and "138" not in scrubbed and "0013" not in scrubbed
    assert "Zhang San" in scrubbed and "58412927" in scrubbed
    assert scrub_text("电话１３８００１３８０００。", ["13800138000"]).strip(" 。") == "电话"
    assert scrub_text("nothing here", []) == "nothing here"


def test_scrub_text_legacy_and_country_code_forms() -> None:
    assert "1101051990" not in scrub_text("id 110105199001011232", ["110105900101123"])
    assert "138" not in scrub_text("call 13800138000", ["+86 13800138000"])


def test_scrub_text_of_indexed_narrative(keyring: Keyring) -> None:
    patient = example("patient-example-chinese.json")
    result = seal(patient, keyring)
    scrubbed = scrub_text(patient["text"]["div"], result.plaintexts)
    assert "18337177888" not in scrubbed and "张无忌" in scrubbed


def _scrub_by_regex(text: str, forms: set[str]) -> str:
    """The definition scrub_text must agree with: each form's characters in a row, with
    separators and short markup allowed between them, replaced by one space."""
    import re
    import unicodedata

    from yilian.fhir.store.sealing import _SEPARATOR_CLASS

    text = unicodedata.normalize("NFKC", text)  # full-width digits and brackets count as their ASCII
    pattern = "|".join(
        _SEPARATOR_CLASS.join(re.escape(c) for c in form) for form in sorted(forms, key=len, reverse=True)
    )
    return re.sub(pattern, " ", text, flags=re.IGNORECASE)


@given(
    st.lists(
        st.sampled_from(
            ["1", "3", "8", "0", "X", "x", " ", "-", "（", "<b>", "</span>", "<", "电", "话", "。"]
        ),
        max_size=40,
    ),
    st.permutations("1380X").map(lambda p: "".join(p)),
    st.integers(min_value=3, max_value=5),
)
def test_scrub_text_removes_what_the_separator_pattern_matches(
    pieces: list[str], letters: str, size: int
) -> None:
    # A value whose characters are all different cannot overlap itself, so "every occurrence"
    # is one well-defined set of runs: the same the regular expression finds.
    value = letters[:size]
    text = "".join(pieces[:20]) + value[:2] + "-" + value[2:] + "".join(pieces[20:])
    scrubbed = scrub_text(text, [value])
    assert scrubbed == _scrub_by_regex(text, {value.upper()})
    assert value.upper() not in scrubbed.upper().replace("-", "")
