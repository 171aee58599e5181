"""Opening WireGuard transport data in a capture with session keys (protocols.md §8.1, §8.3).

A transport message names its receiver index in clear; the key that decrypts it is the
receiver's receive key, which is also the sender's send key. A device that exports its
sessions (``natkit wg up --keys-out FILE``) writes both directions of each session into the
keys file, so a sniffer holding that file can read every packet of the tunnel. The inner IP
packet is padded to 16 bytes (whitepaper §5.4.6); its own length field says where it ends.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from toolkit.codec import wireguard
from toolkit.crypto import noise
from toolkit.crypto.keylog import WireGuardSession
from toolkit.errors import CryptoError

_ICMP4 = {0: "echo-reply", 3: "unreachable", 8: "echo-request", 11: "time-exceeded"}
_ICMP6 = {1: "unreachable", 128: "echo-request", 129: "echo-reply", 135: "neighbor-solicit", 136: "neighbor-advert"}


def sessions_of(keys: noise.SessionKeys, label: str = "") -> list[WireGuardSession]:
    """Both directions of a session: what the local side receives, and what it sends."""
    return [
        WireGuardSession(keys.local_index, keys.recv_key, f"{label} in".strip()),
        WireGuardSession(keys.remote_index, keys.send_key, f"{label} out".strip()),
    ]


@dataclass(frozen=True, slots=True)
class OpenedTransport:
    session: WireGuardSession
    inner: bytes  # the inner IP packet, padding removed (b"" for a keepalive)

    def summary(self) -> str:
        return "keepalive" if not self.inner else describe_ip(self.inner)


def open_transport(msg: wireguard.Transport, sessions: list[WireGuardSession]) -> OpenedTransport | None:
    """Try the sessions registered for the message's receiver index; None if none decrypts it."""
    for s in sessions:
        try:
            plain = noise.decrypt(s.key, msg.counter, msg.encrypted_packet)
        except CryptoError:
            continue
        return OpenedTransport(s, _strip_padding(plain))
    return None


def _strip_padding(plain: bytes) -> bytes:
    if not plain:
        return b""
    if plain[0] >> 4 == 4 and len(plain) >= 20:
        return plain[: struct.unpack_from("!H", plain, 2)[0]]
    if plain[0] >> 4 == 6 and len(plain) >= 40:
        return plain[: 40 + struct.unpack_from("!H", plain, 4)[0]]
    return plain


def describe_ip(pkt: bytes) -> str:
    """One line for an inner IP packet: ``100.64.0.1 -> 100.64.0.2 ICMP echo-request 64B``."""
    try:
        if pkt[0] >> 4 == 4:
            src, dst = ipaddress.IPv4Address(pkt[12:16]), ipaddress.IPv4Address(pkt[16:20])
            proto, l4 = pkt[9], pkt[(pkt[0] & 0x0F) * 4 :]
            icmp_names, icmp = _ICMP4, 1
        elif pkt[0] >> 4 == 6:
            src, dst = ipaddress.IPv6Address(pkt[8:24]), ipaddress.IPv6Address(pkt[24:40])  # type: ignore[assignment]
            proto, l4 = pkt[6], pkt[40:]
            icmp_names, icmp = _ICMP6, 58
        else:
            return f"not IP ({len(pkt)}B)"
        if proto == icmp and l4:
            what = f"ICMP {icmp_names.get(l4[0], f'type {l4[0]}')}"
        elif proto in (6, 17) and len(l4) >= 4:
            sport, dport = struct.unpack_from("!HH", l4)
            what = f"{'TCP' if proto == 6 else 'UDP'} {sport} -> {dport}"
        else:
            what = f"IP proto {proto}"
        return f"{src} -> {dst} {what} {len(pkt)}B"
    except (IndexError, struct.error, ValueError):
        return f"truncated IP packet ({len(pkt)}B)"


__all__ = ["OpenedTransport", "WireGuardSession", "describe_ip", "open_transport", "sessions_of"]
