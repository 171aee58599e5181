"""DERP codec: decoding frames, one at a time or from a byte stream (protocols.md §2).

This is the module to import. It re-exports the frame dataclasses and constants of
:mod:`toolkit.codec.derp_frames` (§2.2, §2.3) and the HTTP upgrade and JSON bodies of
:mod:`toolkit.codec.derp_http` (§2.1, §2.3), and adds :func:`decode_frame`, :func:`decode` and the
incremental :class:`FrameDecoder`. Stdlib only; decoders raise only DecodeError subclasses.

Decoding decisions, where Go's code is lenient (each keeps ``decode(encode(x)) == x`` byte-exact):

* Protocol version 2 only: :class:`RecvPacket` always carries the source key (v0/v1 had none).
* Ping and Pong carry 8..1000 bytes and keep all of them. The server accepts that range and echoes the
  first 8 (:meth:`Ping.pong`); Go clients send exactly 8; the Go client reads any length >= 8.
* PeerGone without its reason byte (old servers) decodes as ``DISCONNECTED``; re-encoding adds the byte.
* PeerPresent is accepted in the forms servers have sent: 32 bytes (key), 50 (key, endpoint), 51 and
  more (key, endpoint, flags, any newer trailing bytes kept in ``extra``). 33..49 bytes are an error
  (the Go client would keep just the key; no server sends that).
* Exact sizes: NotePreferred 1 (any non-zero byte means "home", as the server reads it), WatchConns 0,
  ClosePeer 32 (the server's checks), KeepAlive 0, Restarting 8 (what servers send).
* Health text must be UTF-8. Frame types not in :class:`FrameType` decode as :class:`UnknownFrame`,
  never as an error: both sides skip them by length (§2.3).
"""

from __future__ import annotations

from collections.abc import Callable

from toolkit.codec.derp_frames import (
    CLIENT_INFO_MAX,
    CLIENT_INFO_MIN,
    CLIENT_MAX_FRAME,
    FRAME_HEADER_LEN,
    KEY_LEN,
    MAGIC,
    MAX_INFO_LEN,
    MAX_PACKET_SIZE,
    MAX_PING_LEN,
    NONCE_LEN,
    PING_LEN,
    PROTOCOL_VERSION,
    SERVER_KEY_LEN,
    WRITE_MAX_FRAME,
    ClientInfo,
    ClosePeer,
    ForwardPacket,
    Frame,
    FrameType,
    Health,
    KeepAlive,
    NotePreferred,
    PeerGone,
    PeerGoneReason,
    PeerPresent,
    PeerPresentFlags,
    Ping,
    Pong,
    RecvPacket,
    Restarting,
    SendPacket,
    ServerInfo,
    ServerKey,
    UnknownFrame,
    WatchConns,
    frame_header,
    type_name,
)
from toolkit.codec.derp_http import (
    MAX_HTTP_HEAD,
    ClientInfoJSON,
    ServerInfoJSON,
    UpgradeRequest,
    UpgradeResponse,
    http_response,
    parse_upgrade_request,
    parse_upgrade_response,
    split_http_head,
    upgrade_request,
    upgrade_response,
)
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, DecodeError, TruncatedError
from toolkit.types import Endpoint, NodePublicKey

_ENDPOINT_LEN = 16 + 2  # IP16 ‖ port u16 BE, §2.3 PeerPresent


def _key(payload: bytes, at: int = 0) -> NodePublicKey:
    return NodePublicKey(payload[at : at + KEY_LEN])


def _need(name: str, payload: bytes, lo: int, hi: int | None = None) -> None:
    """Length check: TruncatedError below ``lo``, BadLengthError above ``hi`` (None = no upper bound)."""
    if len(payload) < lo:
        raise TruncatedError(f"DERP {name} frame has {len(payload)} bytes, needs at least {lo}")
    if hi is not None and len(payload) > hi:
        raise BadLengthError(f"DERP {name} frame has {len(payload)} bytes, allowed at most {hi}")


def _exact(name: str, payload: bytes, n: int) -> None:
    _need(name, payload, n, n)


def _server_key(p: bytes) -> ServerKey:
    # §2.3: the client reads 40 bytes and needs all of them; extra bytes are for future use.
    _need("SERVER_KEY", p, SERVER_KEY_LEN)
    if p[: len(MAGIC)] != MAGIC:
        raise BadMagicError(f"DERP SERVER_KEY frame starts with {p[:8].hex()}, not the magic {MAGIC.hex()}")
    return ServerKey(_key(p, len(MAGIC)), p[SERVER_KEY_LEN:])


def _client_info(p: bytes) -> ClientInfo:
    _need("CLIENT_INFO", p, CLIENT_INFO_MIN, CLIENT_INFO_MAX)  # the server's bounds, §2.3
    return ClientInfo(_key(p), p[KEY_LEN:CLIENT_INFO_MIN], p[CLIENT_INFO_MIN:])


def _server_info(p: bytes) -> ServerInfo:
    _need("SERVER_INFO", p, NONCE_LEN, NONCE_LEN + MAX_INFO_LEN)  # the client's bounds
    return ServerInfo(p[:NONCE_LEN], p[NONCE_LEN:])


def _send_packet(p: bytes) -> SendPacket:
    _need("SEND_PACKET", p, KEY_LEN, KEY_LEN + MAX_PACKET_SIZE)
    return SendPacket(_key(p), p[KEY_LEN:])


def _recv_packet(p: bytes) -> RecvPacket:
    _need("RECV_PACKET", p, KEY_LEN, KEY_LEN + MAX_PACKET_SIZE)
    return RecvPacket(_key(p), p[KEY_LEN:])


def _keep_alive(p: bytes) -> KeepAlive:
    _exact("KEEP_ALIVE", p, 0)
    return KeepAlive()


def _note_preferred(p: bytes) -> NotePreferred:
    _exact("NOTE_PREFERRED", p, 1)
    return NotePreferred(p[0] != 0)


def _peer_gone(p: bytes) -> PeerGone:
    _need("PEER_GONE", p, KEY_LEN, KEY_LEN + 1)
    reason = p[KEY_LEN] if len(p) > KEY_LEN else PeerGoneReason.DISCONNECTED  # old servers: no reason byte
    return PeerGone(_key(p), reason)


def _peer_present(p: bytes) -> PeerPresent:
    _need("PEER_PRESENT", p, KEY_LEN)
    key = _key(p)
    if len(p) == KEY_LEN:
        return PeerPresent(key)
    if len(p) < KEY_LEN + _ENDPOINT_LEN:
        raise BadLengthError(f"DERP PEER_PRESENT frame has {len(p)} bytes: neither 32 (key only) nor >= 50")
    ip16, port = p[KEY_LEN : KEY_LEN + 16], int.from_bytes(p[KEY_LEN + 16 : KEY_LEN + _ENDPOINT_LEN], "big")
    endpoint = Endpoint.from_packed16(ip16, port)
    rest = p[KEY_LEN + _ENDPOINT_LEN :]
    if not rest:
        return PeerPresent(key, endpoint)
    return PeerPresent(key, endpoint, PeerPresentFlags(rest[0]), rest[1:])


def _forward_packet(p: bytes) -> ForwardPacket:
    _need("FORWARD_PACKET", p, 2 * KEY_LEN, 2 * KEY_LEN + MAX_PACKET_SIZE)
    return ForwardPacket(_key(p), _key(p, KEY_LEN), p[2 * KEY_LEN :])


def _watch_conns(p: bytes) -> WatchConns:
    _exact("WATCH_CONNS", p, 0)
    return WatchConns()


def _close_peer(p: bytes) -> ClosePeer:
    _exact("CLOSE_PEER", p, KEY_LEN)
    return ClosePeer(_key(p))


def _ping(p: bytes) -> Ping:
    _need("PING", p, PING_LEN, MAX_PING_LEN)
    return Ping(p)


def _pong(p: bytes) -> Pong:
    _need("PONG", p, PING_LEN, MAX_PING_LEN)
    return Pong(p)


def _health(p: bytes) -> Health:
    try:
        return Health(p.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadValueError(f"DERP HEALTH frame text is not UTF-8: {exc}") from None


def _restarting(p: bytes) -> Restarting:
    _exact("RESTARTING", p, 8)
    return Restarting(int.from_bytes(p[:4], "big"), int.from_bytes(p[4:], "big"))


_DECODERS: dict[int, Callable[[bytes], Frame]] = {
    FrameType.SERVER_KEY: _server_key,
    FrameType.CLIENT_INFO: _client_info,
    FrameType.SERVER_INFO: _server_info,
    FrameType.SEND_PACKET: _send_packet,
    FrameType.RECV_PACKET: _recv_packet,
    FrameType.KEEP_ALIVE: _keep_alive,
    FrameType.NOTE_PREFERRED: _note_preferred,
    FrameType.PEER_GONE: _peer_gone,
    FrameType.PEER_PRESENT: _peer_present,
    FrameType.FORWARD_PACKET: _forward_packet,
    FrameType.WATCH_CONNS: _watch_conns,
    FrameType.CLOSE_PEER: _close_peer,
    FrameType.PING: _ping,
    FrameType.PONG: _pong,
    FrameType.HEALTH: _health,
    FrameType.RESTARTING: _restarting,
}


def decode_frame(frame_type: int, payload: bytes) -> Frame:
    """Decode one frame's payload (the bytes after the 5-byte header), validating it per type (§2.3).

    Unknown types give :class:`UnknownFrame`. Raises DecodeError subclasses whose message names the type.
    """
    if isinstance(frame_type, bool) or not isinstance(frame_type, int) or not 0 <= frame_type <= 0xFF:
        raise BadValueError(f"DERP frame type {frame_type!r} is not a byte")
    payload = bytes(payload)
    decoder = _DECODERS.get(frame_type)
    if decoder is None:
        return UnknownFrame(frame_type, payload)
    try:
        return decoder(payload)
    except DecodeError:
        raise
    except (ValueError, IndexError, TypeError) as exc:  # defensive: nothing above should get here
        raise BadValueError(f"DERP {type_name(frame_type)} frame does not decode: {exc}") from None


def decode(data: bytes, *, max_frame_len: int = WRITE_MAX_FRAME) -> Frame:
    """Decode exactly one whole frame (header and payload); trailing bytes are an error."""
    data = bytes(data)
    if len(data) < FRAME_HEADER_LEN:
        raise TruncatedError(f"a DERP frame needs a {FRAME_HEADER_LEN}-byte header, got {len(data)} bytes")
    frame_type, length = data[0], int.from_bytes(data[1:FRAME_HEADER_LEN], "big")
    if length > max_frame_len:
        raise BadLengthError(f"DERP {type_name(frame_type)} frame announces {length} bytes, limit {max_frame_len}")
    have = len(data) - FRAME_HEADER_LEN
    if have < length:
        raise TruncatedError(f"DERP {type_name(frame_type)} frame announces {length} bytes, only {have} present")
    if have > length:
        raise BadLengthError(f"DERP {type_name(frame_type)} frame of {length} bytes has {have - length} more after it")
    return decode_frame(frame_type, data[FRAME_HEADER_LEN:])


class FrameDecoder:
    """Incremental frame decoder for one direction of a DERP connection (§2.2).

    Feed it bytes as they arrive, in any split; it returns the complete frames. A header announcing
    more than ``max_frame_len`` bytes raises :class:`BadLengthError` as soon as the header is in (the
    Go client's 1 MiB rule is the default; a server may pass a larger bound). After any DecodeError the
    connection must be closed; the decoder raises the same error again if used.
    """

    def __init__(self, max_frame_len: int = CLIENT_MAX_FRAME) -> None:
        self.max_frame_len = max_frame_len
        self._buf = bytearray()
        self._error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned frame."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Append bytes without decoding; pair with :meth:`next_frame`."""
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed. Raises DecodeError on a bad frame."""
        if self._error is not None:
            raise self._error
        if len(self._buf) < FRAME_HEADER_LEN:
            return None
        frame_type, length = self._buf[0], int.from_bytes(self._buf[1:FRAME_HEADER_LEN], "big")
        try:
            if length > self.max_frame_len:
                raise BadLengthError(
                    f"DERP {type_name(frame_type)} frame announces {length} bytes, limit {self.max_frame_len}"
                )
            end = FRAME_HEADER_LEN + length
            if len(self._buf) < end:
                return None
            payload = bytes(self._buf[FRAME_HEADER_LEN:end])
            del self._buf[:end]
            return decode_frame(frame_type, payload)
        except DecodeError as exc:
            self._error = exc
            raise

    def feed(self, data: bytes) -> list[Frame]:
        """Append ``data`` and return every frame now complete, in order.

        If a frame is bad, the DecodeError is raised and the good frames before it in this call are not
        returned; a caller that must act on them uses :meth:`receive_data` and :meth:`next_frame`.
        """
        self.receive_data(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames


__all__ = [
    "CLIENT_INFO_MAX",
    "CLIENT_INFO_MIN",
    "CLIENT_MAX_FRAME",
    "FRAME_HEADER_LEN",
    "KEY_LEN",
    "MAGIC",
    "MAX_HTTP_HEAD",
    "MAX_INFO_LEN",
    "MAX_PACKET_SIZE",
    "MAX_PING_LEN",
    "NONCE_LEN",
    "PING_LEN",
    "PROTOCOL_VERSION",
    "SERVER_KEY_LEN",
    "WRITE_MAX_FRAME",
    "ClientInfo",
    "ClientInfoJSON",
    "ClosePeer",
    "ForwardPacket",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Health",
    "KeepAlive",
    "NotePreferred",
    "PeerGone",
    "PeerGoneReason",
    "PeerPresent",
    "PeerPresentFlags",
    "Ping",
    "Pong",
    "RecvPacket",
    "Restarting",
    "SendPacket",
    "ServerInfo",
    "ServerInfoJSON",
    "ServerKey",
    "UnknownFrame",
    "UpgradeRequest",
    "UpgradeResponse",
    "WatchConns",
    "decode",
    "decode_frame",
    "frame_header",
    "http_response",
    "parse_upgrade_request",
    "parse_upgrade_response",
    "split_http_head",
    "type_name",
    "upgrade_request",
    "upgrade_response",
]
