"""Key material, field encryption and the blind index (``yilian.kernel.crypto``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from yilian.kernel import prc_id
from yilian.kernel.crypto import (
    BLIND_PREFIX,
    DecryptionError,
    Keyring,
    is_token,
    normalise,
    token_key_id,
)
from yilian.kernel.errors import Category, YilianError

CTX = "test/purpose"
TOKEN_SHAPE = re.compile(r"^ylenc:[A-Za-z0-9_-]{1,16}:[A-Za-z0-9_-]+$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def env_for(*keys: tuple[str, bytes], index: bytes | None = None) -> dict[str, str]:
    return {
        "YILIAN_DATA_KEYS": ",".join(f"{kid}:{b64(key)}" for kid, key in keys),
        "YILIAN_INDEX_KEY": b64(index if index is not None else os.urandom(32)),
    }


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


# ---------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("plaintext", ["110105199001011232", "13800138000", "", "张无忌 ☎ +86", "x" * 5000])
def test_round_trip(keyring: Keyring, plaintext: str) -> None:
    token = keyring.encrypt(plaintext, context=CTX)
    assert TOKEN_SHAPE.match(token) and token.isascii()
    assert is_token(token)
    assert token_key_id(token) == "k1"
    assert keyring.decrypt(token, context=CTX) == plaintext


def test_tokens_are_randomised(keyring: Keyring) -> None:
    # Equal plaintexts must not give equal tokens, or the tokens themselves would be an index.
    tokens = {keyring.encrypt("13800138000", context=CTX) for _ in range(50)}
    assert len(tokens) == 50


def test_token_does_not_contain_the_plaintext(keyring: Keyring) -> None:
    token = keyring.encrypt("13800138000", context=CTX)
    assert "13800138000" not in token
    assert b"13800138000" not in base64.urlsafe_b64decode(token.split(":")[2] + "==")


def test_is_token() -> None:
    assert not is_token("13800138000")
    assert not is_token("ylenc:")
    assert not is_token("ylenc:k1:short")
    assert not is_token(None)
    assert not is_token("prefix ylenc:k1:" + "A" * 40)


def test_tampered_token_is_refused(keyring: Keyring) -> None:
    token = keyring.encrypt("110105199001011232", context=CTX)
    head, payload = token.rsplit(":", 1)
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    # Flip one bit in the nonce, the ciphertext and the tag in turn (on the bytes: flipping a
    # base64 character can land in padding bits and change nothing).
    for i in (0, len(raw) // 2, len(raw) - 1):
        flipped = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        text = base64.urlsafe_b64encode(flipped).rstrip(b"=").decode("ascii")
        with pytest.raises(DecryptionError, match="failed authentication"):
            keyring.decrypt(f"{head}:{text}", context=CTX)
    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt(f"{head}:{payload[:-8]}", context=CTX)


def test_token_is_bound_to_its_purpose(keyring: Keyring) -> None:
    token = keyring.encrypt("13800138000", context="fhir")
    with pytest.raises(DecryptionError) as err:
        keyring.decrypt(token, context="audit")
    assert err.value.category is Category.INTERNAL


def test_unknown_key_id_is_refused(keyring: Keyring) -> None:
    other = Keyring.generate(key_id="k9")
    token = other.encrypt("13800138000", context=CTX)
    with pytest.raises(DecryptionError, match=r"data key 'k9', which is not in the keyring"):
        keyring.decrypt(token, context=CTX)


def test_relabelled_key_id_is_refused() -> None:
    # Both keys exist: moving a token to the other id must fail like any tampering.
    ring = Keyring.generate().with_new_key("k2")
    token = ring.encrypt("13800138000", context=CTX)
    with pytest.raises(DecryptionError, match="failed authentication"):
        ring.decrypt(token.replace("ylenc:k1:", "ylenc:k2:"), context=CTX)


def test_malformed_token_is_refused(keyring: Keyring) -> None:
    with pytest.raises(DecryptionError, match="not an encrypted value"):
        keyring.decrypt("ylenc:k1", context=CTX)


# ---------------------------------------------------------------------------- rotation


def test_rotation_new_writes_use_the_new_key_old_tokens_still_open(keyring: Keyring) -> None:
    old_token = keyring.encrypt("13800138000", context=CTX)
    rotated = keyring.with_new_current_key()
    assert rotated.current_key_id == "k2"
    assert rotated.key_ids == ("k2", "k1")
    new_token = rotated.encrypt("13800138000", context=CTX)
    assert token_key_id(new_token) == "k2"
    assert rotated.decrypt(old_token, context=CTX) == "13800138000"
    assert not rotated.is_current(old_token) and rotated.is_current(new_token)
    again = rotated.reencrypt(old_token, context=CTX)
    assert token_key_id(again) == "k2" and rotated.decrypt(again, context=CTX) == "13800138000"
    assert rotated.reencrypt(again, context=CTX) == again  # already current: untouched
    # The index key does not change with the data key.
    assert rotated.blind("13800138000", kind="phone") == keyring.blind("13800138000", kind="phone")


def test_staged_rotation_lets_old_processes_read_new_rows(keyring: Keyring) -> None:
    # Step 1, every process: knows k2, still writes with k1.
    staged = keyring.with_new_key()
    assert staged.current_key_id == "k1" and "k2" in staged.key_ids
    # Step 2, processes switch one by one: a row written by a switched process...
    switched = staged.with_current("k2")
    token = switched.encrypt("110105199001011232", context=CTX)
    # ...is readable by a process still on the staged keyring.
    assert staged.decrypt(token, context=CTX) == "110105199001011232"
    # Only a keyring that never got k2 fails, and says why.
    with pytest.raises(DecryptionError, match="'k2'"):
        keyring.decrypt(token, context=CTX)


def test_retiring_keys() -> None:
    original = Keyring.generate()
    old_token = original.encrypt("x", context=CTX)
    ring = original.with_new_current_key()
    moved = ring.reencrypt(old_token, context=CTX)
    retired = ring.without_key("k1")
    assert retired.key_ids == ("k2",)
    assert retired.decrypt(moved, context=CTX) == "x"
    with pytest.raises(DecryptionError, match="'k1'"):
        retired.decrypt(old_token, context=CTX)
    with pytest.raises(YilianError, match="current key"):
        ring.without_key("k2")
    with pytest.raises(YilianError, match="not in the keyring"):
        ring.without_key("k7")
    with pytest.raises(YilianError, match="already in the keyring"):
        ring.with_new_current_key("k1")


# ---------------------------------------------------------------------------- blind index


def x_ending_id() -> str:
    """A valid ID number whose check character is X."""
    for seq in range(1, 999, 2):
        number = prc_id.generate("110105", dt.date(1990, 1, 1), "male", seq)
        if number.endswith("X"):
            return number
    raise AssertionError("no X-ending number found")


def test_blind_is_keyed_compact_and_stable(keyring: Keyring) -> None:
    blind = keyring.blind("110105199001011234", kind="prc-id")
    assert blind.startswith(BLIND_PREFIX) and len(blind) == len(BLIND_PREFIX) + 24
    assert "110105" not in blind
    assert blind == keyring.blind("110105199001011234", kind="prc-id")
    other = Keyring.generate()  # another index key
    assert other.blind("110105199001011234", kind="prc-id") != blind


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("110105199001011234", " 110105199001011234 "),
        ("110105199001011234", "110105 19900101 1234"),
        ("11010519900101123X", "11010519900101123x"),
        # the legacy 15-digit number and its 18-character successor
        ("110105900101123", "110105199001011232"),
    ],
)
def test_blind_prc_id_equivalents(keyring: Keyring, a: str, b: str) -> None:
    assert keyring.blind(a, kind="prc-id") == keyring.blind(b, kind="prc-id")


def test_blind_real_x_number(keyring: Keyring) -> None:
    number = x_ending_id()
    assert keyring.blind(number.lower(), kind="prc-id") == keyring.blind(number, kind="prc-id")
    assert normalise(number.lower(), kind="prc-id") == number


@pytest.mark.parametrize(
    "variant",
    [
        "+86 138-0013-8000",
        "+8613800138000",
        "0086 138 0013 8000",
        "8613800138000",
        "138 0013 8000",
        "(138) 0013-8000",
    ],
)
def test_blind_phone_equivalents(keyring: Keyring, variant: str) -> None:
    assert keyring.blind(variant, kind="phone") == keyring.blind("13800138000", kind="phone")


def test_blind_distinguishes(keyring: Keyring) -> None:
    assert keyring.blind("13800138000", kind="phone") != keyring.blind("13800138001", kind="phone")
    # same digits, different kinds: different stand-ins
    assert keyring.blind("13800138000", kind="phone") != keyring.blind("13800138000", kind="document")
    # a landline keeps its area code
    assert normalise("0572-3252438", kind="phone") == "05723252438"
    assert normalise("e 1234-5678", kind="document") == "E12345678"
    assert normalise(" As Is ", kind="exact") == " As Is "


# ---------------------------------------------------------------------------- configuration


def test_from_env_first_key_is_current() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    ring = Keyring.from_config(env_for(("k2", k2), ("k1", k1)), key_file=None)
    assert ring.current_key_id == "k2" and ring.key_ids == ("k2", "k1")
    single = Keyring({"k1": k1}, current="k1", index_key=os.urandom(32))
    assert ring.decrypt(single.encrypt("v", context=CTX), context=CTX) == "v"


def test_from_env_accepts_url_safe_unpadded_base64() -> None:
    key = os.urandom(32)
    env = {
        "YILIAN_DATA_KEYS": "k1:" + base64.urlsafe_b64encode(key).decode().rstrip("="),
        "YILIAN_INDEX_KEY": b64(os.urandom(32)),
    }
    assert Keyring.from_config(env, key_file=None).current_key_id == "k1"


SECRET = b64(b"\x01" * 32)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"YILIAN_DATA_KEYS": "k1:" + SECRET}, "YILIAN_INDEX_KEY is not set"),
        ({"YILIAN_INDEX_KEY": SECRET}, "YILIAN_DATA_KEYS is not set"),
        (
            {"YILIAN_DATA_KEYS": "k1:" + SECRET[:-4] + "!!!!", "YILIAN_INDEX_KEY": SECRET},
            "key 'k1' is not valid base64",
        ),
        ({"YILIAN_DATA_KEYS": "k1:" + b64(b"\x01" * 16), "YILIAN_INDEX_KEY": SECRET}, "has 16 bytes"),
        ({"YILIAN_DATA_KEYS": SECRET, "YILIAN_INDEX_KEY": SECRET}, "must look like <key id>:<base64 key>"),
        ({"YILIAN_DATA_KEYS": f"k1:{SECRET},k1:{SECRET}", "YILIAN_INDEX_KEY": SECRET}, "appears twice"),
        ({"YILIAN_DATA_KEYS": f"bad id:{SECRET}", "YILIAN_INDEX_KEY": SECRET}, "a key id must be"),
        (
            {"YILIAN_DATA_KEYS": "k1:" + SECRET, "YILIAN_INDEX_KEY": b64(b"\x02" * 8)},
            "blind-index key has 8 bytes",
        ),
        (
            {"YILIAN_DATA_KEYS": "k1:" + SECRET, "YILIAN_INDEX_KEY": "not base64!"},
            "YILIAN_INDEX_KEY is not valid",
        ),
        ({}, "no encryption keys are configured"),
    ],
)
def test_bad_configuration_is_explained_without_quoting_keys(env: dict[str, str], message: str) -> None:
    with pytest.raises(YilianError) as err:
        Keyring.from_config(env, key_file=None)
    assert err.value.category is Category.INVALID
    assert message in err.value.message
    assert SECRET not in err.value.message and SECRET[:12] not in err.value.message


def test_key_file_is_created_private_and_reloaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "demo.db.keys"
    with caplog.at_level(logging.DEBUG, logger="yilian.kernel.crypto"):
        ring = Keyring.from_config({}, key_file=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = ring.encrypt("13800138000", context=CTX)
    again = Keyring.from_config({}, key_file=path)
    assert again.decrypt(token, context=CTX) == "13800138000"
    assert again.blind("13800138000", kind="phone") == ring.blind("13800138000", kind="phone")
    # The log says a key file was made, never what is in it.
    doc = json.loads(path.read_text())
    logged = caplog.text
    assert "created encryption key file" in logged
    for secret in (*doc["data_keys"].values(), doc["index_key"]):
        assert secret not in logged and secret[:16] not in logged
    assert not list(tmp_path.glob(".*.tmp"))  # no stray temporary file


def test_concurrent_first_start_agrees_on_one_keyring(tmp_path: Path) -> None:
    path = tmp_path / "db.keys"
    rings: list[Keyring] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        rings.append(Keyring.load_or_create(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    token = rings[0].encrypt("v", context=CTX)
    assert all(r.decrypt(token, context=CTX) == "v" for r in rings)
    assert len({r.blind("v", kind="exact") for r in rings}) == 1


def test_env_wins_over_key_file_and_key_file_env_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "db.keys"
    env = env_for(("k5", os.urandom(32)))
    assert Keyring.from_config(env, key_file=path).current_key_id == "k5"
    assert not path.exists()
    with pytest.raises(YilianError, match="does not exist"):
        Keyring.from_config({"YILIAN_KEY_FILE": str(tmp_path / "missing.keys")}, key_file=path)


def test_saved_rotation_survives_reload(tmp_path: Path) -> None:
    path = tmp_path / "db.keys"
    ring = Keyring.load_or_create(path)
    old = ring.encrypt("v", context=CTX)
    rotated = ring.with_new_current_key()
    rotated.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reloaded = Keyring.load(path)
    assert reloaded.current_key_id == "k2"
    assert reloaded.decrypt(old, context=CTX) == "v"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "is not JSON"),
        ({"format": "other"}, "is not a yilian-keyring/1 key file"),
        (
            {"format": "yilian-keyring/1", "current": "k3", "data_keys": {"k1": SECRET}, "index_key": SECRET},
            "current data key 'k3' is not among the data keys",
        ),
        (
            {"format": "yilian-keyring/1", "current": "k1", "data_keys": {"k1": "@@@"}, "index_key": SECRET},
            "data key 'k1' is not valid base64",
        ),
        (
            {"format": "yilian-keyring/1", "current": "k1", "data_keys": ["x"], "index_key": SECRET},
            "'data_keys' must map",
        ),
    ],
)
def test_bad_key_file(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "bad.keys"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(YilianError, match=re.escape(message)) as err:
        Keyring.load(path)
    assert SECRET not in err.value.message


def test_repr_hides_key_material() -> None:
    key = os.urandom(32)
    ring = Keyring({"k1": key}, current="k1", index_key=key)
    text = repr(ring)
    assert "k1" in text and b64(key) not in text and key.hex() not in text and repr(key) not in text
