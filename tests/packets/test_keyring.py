"""The keyring: its file format, its error messages, and opening disco boxes either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.codec import disco
from toolkit.crypto import disco as disco_crypto
from toolkit.crypto import keys
from toolkit.errors import UsageError
from toolkit.packets.keyring import FORMAT_VERSION, Keyring, load_keyring
from toolkit.types import Endpoint, NodePublicKey, TxID

A_PRIV, A_PUB = keys.disco_key_pair(b"keyring-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"keyring-b")
C_PRIV, C_PUB = keys.disco_key_pair(b"keyring-c")
PING = disco.Ping(TxID(bytes(range(12))), NodePublicKey(bytes(range(1, 33))))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ring = Keyring([A_PRIV], [B_PUB])
    ring.name(B_PUB, "bob")
    ring.name(NodePublicKey(bytes(range(32))), "bob's node")
    ring.save(tmp_path / "k.json")
    data = json.loads((tmp_path / "k.json").read_text())
    assert data["version"] == FORMAT_VERSION == 1
    assert data["disco_private"] == [A_PRIV.text()] and data["disco_public"] == [B_PUB.text()]
    assert data["wireguard"] == []
    again = Keyring.load(tmp_path / "k.json")
    assert again.disco_private == [A_PRIV] and again.disco_public == [B_PUB]
    assert again.label(B_PUB) == "bob" and again.label(A_PUB) == A_PUB.short()
    assert again.names[NodePublicKey(bytes(range(32)))] == "bob's node"


def test_file_without_version_and_in_other_key_forms_is_read(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"disco_private": [A_PRIV.raw.hex(), B_PRIV.b64()], "disco_public": [C_PUB.b64()]}))
    ring = load_keyring(path)
    assert ring.disco_private == [A_PRIV, B_PRIV] and ring.disco_public == [C_PUB]
    assert load_keyring(None).disco_private == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON (line 1 column 2"),
        ("[]", "the top level must be a JSON object, got list"),
        ('{"version": 2}', "version 2 is not supported"),
        ('{"disco_privat": []}', "unknown key 'disco_privat'"),
        ('{"disco_private": "abc"}', "disco_private must be a list, got str"),
        ('{"disco_private": [12]}', "disco_private[0]: expected a key string"),
        ('{"disco_private": ["discoprivkey:zz"]}', "disco_private[0]: not a 32-byte DiscoPrivateKey (discoprivkey:"),
        ('{"disco_public": ["nodekey:' + "00" * 32 + '"]}', "disco_public[0]: 'nodekey:"),
        ('{"names": {"discokey:' + "00" * 32 + '": ""}}', "the name must be a non-empty string"),
        ('{"wireguard": {}}', "wireguard must be a list"),
    ],
)
def test_bad_files_give_one_clear_usage_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError) as err:
        Keyring.load(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"keys file {path}:")
    assert "\n" not in str(err.value)


def test_private_key_material_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    secret = A_PRIV.raw.hex()[:-1]  # one digit short
    path.write_text(json.dumps({"disco_private": [secret]}))
    with pytest.raises(UsageError) as err:
        Keyring.load(path)
    assert secret not in str(err.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        Keyring.load(tmp_path / "nope.json")
    with pytest.raises(UsageError, match="is a directory"):
        Keyring.load(tmp_path)


def test_receiver_private_key_opens() -> None:
    wire = disco_crypto.seal_message(PING, A_PRIV, B_PUB)
    opened = Keyring([B_PRIV]).open_disco(wire)
    assert opened is not None
    assert (opened.sender, opened.receiver, opened.message) == (A_PUB, B_PUB, PING)
    assert opened.plaintext == PING.encode()


def test_sender_private_key_needs_the_receiver_public_key() -> None:
    wire = disco_crypto.seal_message(PING, A_PRIV, B_PUB)
    assert Keyring([A_PRIV]).open_disco(wire) is None
    opened = Keyring([A_PRIV], [C_PUB, B_PUB]).open_disco(wire)
    assert opened is not None and opened.receiver == B_PUB and opened.message == PING


def test_wrong_keys_do_not_open_and_non_disco_raises() -> None:
    wire = disco_crypto.seal_message(PING, A_PRIV, B_PUB)
    assert Keyring([C_PRIV]).open_disco(wire) is None
    with pytest.raises(Exception) as err:
        Keyring([C_PRIV]).open_disco(b"not disco at all, long enough to not be short" * 2)
    assert getattr(err.value, "reason", None) == "bad-magic"


def test_box_that_opens_but_does_not_parse_is_reported() -> None:
    from toolkit.codec.disco import MAGIC
    from toolkit.crypto import box

    wire = MAGIC + A_PUB.raw + box.seal(A_PRIV, B_PUB, b"\x63\x00unknown type")
    opened = Keyring([B_PRIV]).open_disco(wire)
    assert opened is not None and opened.message is None
    assert opened.error is not None and opened.error.reason == "unknown-type"
    assert opened.plaintext == b"\x63\x00unknown type"


def test_disco_keyring_view_opens_the_same() -> None:
    pong = disco.Pong(TxID(bytes(12)), Endpoint.parse("1.2.3.4:5"))
    wire = disco_crypto.seal_message(pong, B_PRIV, A_PUB)
    got = Keyring([A_PRIV]).disco_keyring().try_open(wire)
    assert got is not None and got[2] == pong
