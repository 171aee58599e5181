"""Build valid STUN, disco, WireGuard and DERP packets: as raw bytes, or as scapy packets for ``send()``.

The bytes come from the codecs and :mod:`toolkit.crypto` (design.md §2: one implementation of each
format), so a crafted packet is exactly what a natkit node sends: STUN with the right length,
MESSAGE-INTEGRITY and FINGERPRINT (RFC 8489 §14.5, §14.7), disco sealed in a NaCl box
(protocols.md §1.1), WireGuard in the layouts of §8.1, DERP frames as §2.2. The ``*_bytes``
functions return what goes in a UDP payload or on a DERP stream; :func:`udp` wraps a payload in
``IP/UDP`` (or ``IPv6/UDP``) with natkit's layer on top, checksums left to scapy.
:func:`tcp_conversation` lays out a TCP connection (handshake, data segments, any split), to write
DERP captures for lessons and tests; :func:`write_pcap` writes packets to a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from toolkit.codec import derp, disco, stun, wireguard
from toolkit.crypto import disco as disco_crypto
from toolkit.packets import pcapio
from toolkit.packets.bind import datagram_class
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Endpoint, NodePublicKey, TxID

# --- STUN (RFC 8489) -------------------------------------------------------------------------------


def new_txid() -> TxID:
    return TxID(os.urandom(12))


def stun_bytes(
    msg_class: stun.Class,
    method: int,
    attributes: Sequence[stun.StunAttribute] = (),
    *,
    txid: TxID | None = None,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Any STUN message; MESSAGE-INTEGRITY (with ``integrity_key``) then FINGERPRINT are appended last."""
    msg = stun.Message(msg_class, method, txid or new_txid(), tuple(attributes))
    return msg.encode(integrity_key=integrity_key, fingerprint=fingerprint)


def stun_binding_request(
    txid: TxID | None = None,
    *,
    software: str | None = "tailnode",
    username: str | None = None,
    integrity_key: bytes | None = None,
    change_ip: bool = False,
    change_port: bool = False,
    fingerprint: bool = True,
) -> bytes:
    """A Binding Request; the defaults give Tailscale's 40-byte request (protocols.md §3.1)."""
    attrs: list[stun.StunAttribute] = []
    if software is not None:
        attrs.append(stun.Software(software))
    if username is not None:
        attrs.append(stun.Username(username))
    if change_ip or change_port:
        attrs.append(stun.ChangeRequest(change_ip, change_port))
    return stun_bytes(
        stun.Class.REQUEST, stun.Method.BINDING, attrs, txid=txid, integrity_key=integrity_key, fingerprint=fingerprint
    )


def stun_binding_response(
    txid: TxID,
    mapped: Endpoint,
    *,
    software: str | None = None,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding Success with XOR-MAPPED-ADDRESS (protocols.md §3.2), optionally signed."""
    attrs: list[stun.StunAttribute] = [stun.XorMappedAddress(mapped)]
    if software is not None:
        attrs.append(stun.Software(software))
    return stun_bytes(
        stun.Class.SUCCESS, stun.Method.BINDING, attrs, txid=txid, integrity_key=integrity_key, fingerprint=fingerprint
    )


# --- disco (protocols.md §1) -----------------------------------------------------------------------


def disco_bytes(
    msg: disco.Message, sender: DiscoPrivateKey, receiver: DiscoPublicKey, *, nonce: bytes | None = None
) -> bytes:
    """``msg`` sealed from ``sender`` to ``receiver``: a whole disco packet."""
    return disco_crypto.seal_message(msg, sender, receiver, nonce=nonce)


def disco_ping(
    sender: DiscoPrivateKey,
    receiver: DiscoPublicKey,
    *,
    txid: TxID | None = None,
    node_key: NodePublicKey | None = None,
    padding: int = 0,
    nonce: bytes | None = None,
) -> bytes:
    return disco_bytes(disco.Ping(txid or new_txid(), node_key, padding), sender, receiver, nonce=nonce)


def disco_pong(
    sender: DiscoPrivateKey, receiver: DiscoPublicKey, txid: TxID, src: Endpoint, *, nonce: bytes | None = None
) -> bytes:
    return disco_bytes(disco.Pong(txid, src), sender, receiver, nonce=nonce)


def disco_call_me_maybe(
    sender: DiscoPrivateKey, receiver: DiscoPublicKey, endpoints: Iterable[Endpoint], *, nonce: bytes | None = None
) -> bytes:
    return disco_bytes(disco.CallMeMaybe(tuple(endpoints)), sender, receiver, nonce=nonce)


# --- WireGuard layouts (protocols.md §8.1; no cryptography: the encrypted fields are random) -----


def wireguard_initiation(sender_index: int, *, mac2: bytes = bytes(16)) -> bytes:
    rnd = os.urandom
    return wireguard.Initiation(sender_index, rnd(32), rnd(48), rnd(28), rnd(16), mac2).encode()


def wireguard_response(sender_index: int, receiver_index: int, *, mac2: bytes = bytes(16)) -> bytes:
    rnd = os.urandom
    return wireguard.Response(sender_index, receiver_index, rnd(32), rnd(16), rnd(16), mac2).encode()


def wireguard_cookie_reply(receiver_index: int) -> bytes:
    return wireguard.CookieReply(receiver_index, os.urandom(24), os.urandom(32)).encode()


def wireguard_transport(receiver_index: int, counter: int, payload_len: int = 0) -> bytes:
    """A transport message whose payload is ``payload_len`` bytes, padded to 16 as wireguard-go sends."""
    padded = -(-payload_len // 16) * 16
    return wireguard.Transport(receiver_index, counter, os.urandom(padded + wireguard.TAG_LEN)).encode()


# --- DERP (protocols.md §2) ------------------------------------------------------------------------


def derp_bytes(*frames: derp.Frame) -> bytes:
    """Frames back to back, as on the TCP stream after the upgrade."""
    return b"".join(f.encode() for f in frames)


def derp_send_packet(dst: NodePublicKey, packet: bytes) -> bytes:
    return derp.SendPacket(dst, packet).encode()


def derp_recv_packet(src: NodePublicKey, packet: bytes) -> bytes:
    return derp.RecvPacket(src, packet).encode()


# --- scapy packets ---------------------------------------------------------------------------------


def _ep(value: Endpoint | str) -> Endpoint:
    return value if isinstance(value, Endpoint) else Endpoint.parse(value)


def udp(payload: bytes, src: Endpoint | str, dst: Endpoint | str) -> Packet:
    """``IP/UDP/<natkit layer>`` (IPv6 for v6 endpoints), ready for scapy's ``send()``."""
    s, d = _ep(src), _ep(dst)
    ip = IPv6(src=str(s.ip), dst=str(d.ip)) if s.is_ipv6 else IP(src=str(s.ip), dst=str(d.ip))
    return ip / UDP(sport=s.port, dport=d.port) / datagram_class(payload)(payload)


def tcp_conversation(
    client: Endpoint | str,
    server: Endpoint | str,
    chunks: Sequence[tuple[bool, bytes]],
    *,
    segment: int | None = None,
    isn: tuple[int, int] = (1000, 5000),
) -> list[Packet]:
    """A TCP connection as IP packets: handshake, then each ``(from_client, data)`` chunk cut into
    segments of at most ``segment`` bytes, each acknowledged by the other side, then FINs."""
    c, s = _ep(client), _ep(server)
    ip_c = IPv6(src=str(c.ip), dst=str(s.ip)) if c.is_ipv6 else IP(src=str(c.ip), dst=str(s.ip))
    ip_s = IPv6(src=str(s.ip), dst=str(c.ip)) if c.is_ipv6 else IP(src=str(s.ip), dst=str(c.ip))
    seq = {True: isn[0], False: isn[1]}

    def seg(from_client: bool, flags: str, data: bytes = b"") -> Packet:
        ip, sport, dport = (ip_c, c.port, s.port) if from_client else (ip_s, s.port, c.port)
        ack = seq[not from_client] if flags != "S" else 0
        pkt = ip.copy() / TCP(sport=sport, dport=dport, flags=flags, seq=seq[from_client], ack=ack)
        if data:
            pkt = pkt / data
        seq[from_client] = (seq[from_client] + len(data) + (1 if "S" in flags or "F" in flags else 0)) & 0xFFFFFFFF
        return pkt

    out = [seg(True, "S"), seg(False, "SA"), seg(True, "A")]
    for from_client, data in chunks:
        step = segment or len(data) or 1
        for i in range(0, len(data), step):
            out.append(seg(from_client, "PA", data[i : i + step]))
            out.append(seg(not from_client, "A"))
    out += [seg(True, "FA"), seg(False, "FA"), seg(True, "A")]
    return out


def write_pcap(
    path: str | Path, packets: Iterable[Packet | bytes], *, t0: float = 1_700_000_000.0, step: float = 0.001
) -> int:
    """Write IP packets (scapy or bytes) as an Ethernet pcap with timestamps ``t0 + i*step``."""
    n = 0
    with pcapio.PcapWriter(path, pcapio.LINKTYPE_ETHERNET) as w:
        for i, pkt in enumerate(packets):
            raw = bytes(pkt)
            if isinstance(pkt, Ether):
                frame = raw
            else:
                etype = 0x86DD if raw[:1] and raw[0] >> 4 == 6 else 0x0800
                frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=etype)) + raw
            w.write(frame, t0 + i * step)
            n += 1
    return n


__all__ = [
    "derp_bytes",
    "derp_recv_packet",
    "derp_send_packet",
    "disco_bytes",
    "disco_call_me_maybe",
    "disco_ping",
    "disco_pong",
    "new_txid",
    "stun_binding_request",
    "stun_binding_response",
    "stun_bytes",
    "tcp_conversation",
    "udp",
    "wireguard_cookie_reply",
    "wireguard_initiation",
    "wireguard_response",
    "wireguard_transport",
    "write_pcap",
]
