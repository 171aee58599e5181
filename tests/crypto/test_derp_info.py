"""Tests of DERP's sealed ClientInfo/ServerInfo (protocols.md §2.3, §2.4 steps 3-4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec.derp import (
    CLIENT_INFO_MIN,
    ClientInfo,
    ClientInfoJSON,
    FrameDecoder,
    FrameType,
    ServerInfo,
    ServerInfoJSON,
    decode,
    decode_frame,
)
from toolkit.crypto.box import open_sealed, seal
from toolkit.crypto.derp import open_client_info, open_server_info, seal_client_info, seal_server_info
from toolkit.crypto.keys import generate_node_key, public_key
from toolkit.errors import DecodeError, OpenError

CLIENT = generate_node_key(b"derp-test-client")
SERVER = generate_node_key(b"derp-test-server")
OTHER = generate_node_key(b"derp-test-other")
NONCE = bytes(range(24))


def test_client_info_layout_and_open() -> None:
    frame = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER), nonce=NONCE)
    assert frame.key == public_key(CLIENT)
    assert frame.nonce == NONCE
    plaintext = b'{"version":2,"CanAckPings":true}'
    assert len(frame.box) == 16 + len(plaintext)  # Poly1305 tag + ciphertext
    # The payload is client key ‖ nonce ‖ box, and the box is a plain crypto_box of Go's JSON bytes.
    payload = frame.encode_payload()
    assert payload[:32] == public_key(CLIENT).raw and payload[32:CLIENT_INFO_MIN] == NONCE
    assert open_sealed(SERVER, public_key(CLIENT), payload[32:]) == plaintext
    assert open_client_info(frame, SERVER) == ClientInfoJSON()


def test_client_info_is_reproducible_with_a_nonce_and_random_without() -> None:
    a = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER), nonce=NONCE)
    b = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER), nonce=NONCE)
    c = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER))
    assert a == b and a.nonce != c.nonce
    assert open_client_info(c, SERVER) == ClientInfoJSON()


def test_client_info_survives_the_wire() -> None:
    info = ClientInfoJSON(mesh_key="0f" * 32, is_prober=True, app_name="natkit")
    wire = seal_client_info(info, CLIENT, public_key(SERVER)).encode()
    frames = FrameDecoder().feed(wire)
    assert len(frames) == 1 and isinstance(frames[0], ClientInfo)
    assert open_client_info(frames[0], SERVER) == info


def test_client_info_does_not_open_with_another_server_key() -> None:
    frame = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER))
    with pytest.raises(OpenError):
        open_client_info(frame, OTHER)


def test_client_info_does_not_open_when_the_sender_key_is_swapped() -> None:
    frame = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER))
    forged = ClientInfo(public_key(OTHER), frame.nonce, frame.box)
    with pytest.raises(OpenError):
        open_client_info(forged, SERVER)


def test_client_info_tampered_box() -> None:
    frame = seal_client_info(ClientInfoJSON(), CLIENT, public_key(SERVER))
    bad = ClientInfo(frame.key, frame.nonce, frame.box[:-1] + bytes([frame.box[-1] ^ 1]))
    with pytest.raises(OpenError):
        open_client_info(bad, SERVER)
    with pytest.raises(OpenError):  # shorter than a tag: the codec allows it (the server's 56-byte minimum)
        open_client_info(ClientInfo(frame.key, NONCE, b""), SERVER)
    assert decode_frame(FrameType.CLIENT_INFO, frame.key.raw + NONCE) == ClientInfo(frame.key, NONCE, b"")


def test_client_info_bad_json_inside_a_good_box() -> None:
    sealed = seal(CLIENT, public_key(SERVER), b'{"version":"two"}', nonce=NONCE)
    frame = ClientInfo(public_key(CLIENT), sealed[:24], sealed[24:])
    with pytest.raises(DecodeError):
        open_client_info(frame, SERVER)


def test_server_info_seal_and_open() -> None:
    info = ServerInfoJSON(token_bucket_bytes_per_second=1 << 20, token_bucket_bytes_burst=1 << 22)
    frame = seal_server_info(info, SERVER, public_key(CLIENT), nonce=NONCE)
    assert isinstance(frame, ServerInfo) and frame.nonce == NONCE
    assert decode(frame.encode()) == frame
    assert open_server_info(frame, CLIENT, public_key(SERVER)) == info
    default = seal_server_info(ServerInfoJSON(), SERVER, public_key(CLIENT))
    assert open_sealed(CLIENT, public_key(SERVER), default.sealed) == b'{"version":2}'


def test_server_info_does_not_open_with_other_keys() -> None:
    frame = seal_server_info(ServerInfoJSON(), SERVER, public_key(CLIENT))
    with pytest.raises(OpenError):
        open_server_info(frame, OTHER, public_key(SERVER))  # not the client it was sealed to
    with pytest.raises(OpenError):
        open_server_info(frame, CLIENT, public_key(OTHER))  # not from the server we think we talk to


@settings(max_examples=50, deadline=None)
@given(
    st.builds(ClientInfoJSON, app_name=st.text(st.characters(exclude_categories=["Cs"]), max_size=20)),
    st.builds(ServerInfoJSON, token_bucket_bytes_per_second=st.integers(0, 1 << 40)),
    st.binary(min_size=24, max_size=24),
)
def test_seal_open_round_trip(ci: ClientInfoJSON, si: ServerInfoJSON, nonce: bytes) -> None:
    assert open_client_info(seal_client_info(ci, CLIENT, public_key(SERVER), nonce), SERVER) == ci
    assert open_server_info(seal_server_info(si, SERVER, public_key(CLIENT), nonce), CLIENT, public_key(SERVER)) == si


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_opening_arbitrary_boxes_raises_only_open_or_decode_error(box: bytes) -> None:
    frame = ClientInfo(public_key(CLIENT), NONCE, box)
    with pytest.raises((OpenError, DecodeError)):
        open_client_info(frame, SERVER)
    with pytest.raises((OpenError, DecodeError)):
        open_server_info(ServerInfo(NONCE, box), CLIENT, public_key(SERVER))
