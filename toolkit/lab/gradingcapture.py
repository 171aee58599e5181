"""What capture points saw, read the way the exercise checks (toolkit/lab/grading.py) read it.

A :class:`~toolkit.lab.backend.Capture` holds raw IP packets on every backend. :func:`udp_seen` takes the UDP
datagrams out of them *without verifying checksums*: on the kernel backends a packet captured on the host
that sent it has no UDP checksum yet (checksum offload; the veth fills it in later), so a strict parser would
drop exactly the packets the student sent. :func:`binding_requests` and :func:`binding_responses` pick the STUN
Binding messages (RFC 8489 §6). :func:`settle` lets the kernel backends' captures, fed by a reader (an
``AF_PACKET`` thread in ``netns``, tcpdump in a container for ``docker``) a moment after a packet crossed, catch
up before a check reads them; the ``sim`` captures see a packet as it crosses a link, so there it returns at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from toolkit.codec import stun
from toolkit.errors import DecodeError
from toolkit.lab.backend import Capture, Lab, Packet
from toolkit.types import Endpoint

# a capture has caught up when nothing new arrived for this long (seconds), per backend: netns reads its
# AF_PACKET socket at once; tcpdump (docker) without --immediate-mode hands packets over in blocks, up to its
# 1 s buffer timeout (pcap_set_timeout) after they crossed
SETTLE_QUIET_S = {"netns": 0.3, "docker": 1.5}
SETTLE_LIMIT_S = {"netns": 3.0, "docker": 5.0}  # ... or after this long at most (running nodes are never quiet)


@dataclass(frozen=True, slots=True)
class Seen:
    """One UDP datagram a capture point saw."""

    time: float
    src: Endpoint
    dst: Endpoint
    payload: bytes

    def stun(self) -> stun.Message | None:
        """The STUN message in the payload, or None."""
        if not stun.is_stun(self.payload):
            return None
        try:
            return stun.decode(self.payload)
        except DecodeError:
            return None


def _udp(raw: bytes) -> tuple[Endpoint, Endpoint, bytes] | None:
    """Source, destination and payload of the UDP datagram in the raw IP packet ``raw``, or None.

    Checksums are NOT verified: a capture on the sending host sees a packet before the NIC (here the veth)
    fills in its UDP checksum (checksum offload), so the bytes on the wire would not verify yet. Fragments
    after the first are skipped (RFC 791 §3.1)."""
    if len(raw) >= 20 and raw[0] >> 4 == 4:
        ihl, total, frag, proto = (raw[0] & 0x0F) * 4, int.from_bytes(raw[2:4]), int.from_bytes(raw[6:8]), raw[9]
        if proto != 17 or frag & 0x1FFF or ihl < 20:
            return None
        src, dst, l4 = ip_address(raw[12:16]), ip_address(raw[16:20]), raw[ihl : min(total, len(raw))]
    elif len(raw) >= 40 and raw[0] >> 4 == 6 and raw[6] == 17:  # RFC 8200 §3, UDP right after the header
        src, dst, l4 = ip_address(raw[8:24]), ip_address(raw[24:40]), raw[40 : 40 + int.from_bytes(raw[4:6])]
    else:
        return None
    if len(l4) < 8:
        return None
    length = int.from_bytes(l4[4:6])  # RFC 768
    sport, dport = int.from_bytes(l4[0:2]), int.from_bytes(l4[2:4])
    return Endpoint(src, sport), Endpoint(dst, dport), l4[8 : max(8, min(length, len(l4)))]


def udp_seen(packets: Capture | Iterable[Packet]) -> list[Seen]:
    """The UDP datagrams among ``packets`` (a capture or its packets); anything else is skipped."""
    found = []
    for ts, raw in list(packets.packets) if isinstance(packets, Capture) else packets:
        udp = _udp(raw)
        if udp is not None:
            found.append(Seen(ts, *udp))
    return found


def binding_requests(packets: Capture | Iterable[Packet], to: Endpoint | None = None) -> list[tuple[Seen, Any]]:
    """(datagram, message) of every STUN Binding request seen (to ``to`` only, when given)."""
    found = []
    for seen in udp_seen(packets):
        msg = seen.stun()
        if msg is not None and msg.msg_class is stun.Class.REQUEST and (to is None or seen.dst == to):
            found.append((seen, msg))
    return found


def binding_responses(packets: Capture | Iterable[Packet]) -> list[tuple[Seen, Any]]:
    """(datagram, message) of every STUN Binding success response seen."""
    found = []
    for seen in udp_seen(packets):
        msg = seen.stun()
        if msg is not None and msg.msg_class is stun.Class.SUCCESS:
            found.append((seen, msg))
    return found


async def settle(
    lab: Lab, captures: Iterable[Capture], *, quiet: float | None = None, limit: float | None = None
) -> None:
    """Let ``captures`` catch up with the network before a check reads them.

    ``sim``: returns at once (its captures are fed as packets cross; its clock stays where it is). Kernel
    backends: waits, in real time, until none of the captures got a new packet for ``quiet`` seconds, at
    most ``limit`` seconds (defaults per backend: :data:`SETTLE_QUIET_S`, :data:`SETTLE_LIMIT_S`)."""
    if lab.backend == "sim":
        return
    quiet = quiet if quiet is not None else SETTLE_QUIET_S.get(lab.backend, max(SETTLE_QUIET_S.values()))
    limit = limit if limit is not None else SETTLE_LIMIT_S.get(lab.backend, max(SETTLE_LIMIT_S.values()))
    caps = list(captures)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    counts = [len(c.packets) for c in caps]
    quiet_since = loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        now = [len(c.packets) for c in caps]
        if now != counts:
            counts, quiet_since = now, loop.time()
        elif loop.time() - quiet_since >= quiet:
            return


__all__ = ["SETTLE_LIMIT_S", "SETTLE_QUIET_S", "Seen", "binding_requests", "binding_responses", "settle", "udp_seen"]
