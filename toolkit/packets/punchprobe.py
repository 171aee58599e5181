"""The probe program of hole punching by hand: ``python -m toolkit.packets.punchprobe`` on a lab host.

:mod:`toolkit.lab.punch` runs it with :meth:`Lab.run` on the ``netns`` and ``docker`` backends (the
``sim`` backend drives the same procedure on its virtual sockets). Two steps, each a short process:

* ``stun --server IP:PORT --bind IP:PORT [--bind ...]``: from each bound socket, a STUN Binding
  request (RFC 8489 §6, retransmitted every 300 ms); prints ``{"IP:PORT": "MAPPED" | null}`` as JSON.
  The NAT keeps the mapping after the socket closes, so the ``punch`` step binds the same port again.
* ``punch --start-at EPOCH --duration S --interval S --probe TAG,BIND,TARGET,PEER,DELAY [...]``:
  each probe binds ``BIND`` and, from ``EPOCH + DELAY`` (wall clock: namespaces and containers share
  it), sends a probe every ``interval`` to ``TARGET`` and to every endpoint it hears ``PEER`` from
  (peer-reflexive). Prints ``{"late": s, "probes": [{"tag", "sent", "heard": [...], "targets": [...]}]}``.

The probe itself is a scapy layer, :class:`PunchProbe`: the program crafts each one with scapy and
dissects what arrives with it. Its bytes are :func:`toolkit.lab.punch.encode_probe`'s (tested).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

from scapy.fields import FieldLenField, IntField, StrFixedLenField, StrLenField
from scapy.packet import Packet

from toolkit.codec import stun
from toolkit.errors import DecodeError
from toolkit.lab.punch import PROBE_MAGIC
from toolkit.types import Endpoint, TxID


class PunchProbe(Packet):
    """natkit's hole-punching probe: magic, sequence number, sender tag, the ``ip:port`` it was sent to."""

    name = "natkit punch probe"
    fields_desc = [  # noqa: RUF012 (scapy's API)
        StrFixedLenField("magic", PROBE_MAGIC, len(PROBE_MAGIC)),
        IntField("seq", 0),
        FieldLenField("sender_len", None, length_of="sender", fmt="B"),
        StrLenField("sender", b"", length_from=lambda p: p.sender_len),
        FieldLenField("target_len", None, length_of="target", fmt="B"),
        StrLenField("target", b"", length_from=lambda p: p.target_len),
    ]


def craft(sender: str, seq: int, target: Endpoint) -> bytes:
    """One probe, built with scapy."""
    return bytes(PunchProbe(seq=seq, sender=sender.encode(), target=str(target).encode()))


def dissect(data: bytes) -> PunchProbe | None:
    """A received datagram as a :class:`PunchProbe`, or None when it is not one."""
    if not data.startswith(PROBE_MAGIC):
        return None
    probe = PunchProbe(data)
    return probe if probe.sender_len == len(probe.sender) else None


def _udp(bind: Endpoint) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(bind.as_tuple())
    sock.setblocking(False)
    return sock


def cmd_stun(server: Endpoint, binds: list[Endpoint], timeout: float) -> dict[str, str | None]:
    sel = selectors.DefaultSelector()
    answers: dict[str, str | None] = {str(b): None for b in binds}
    txids: dict[bytes, str] = {}
    socks = []
    for bind in binds:
        sock = _udp(bind)
        socks.append((sock, str(bind)))
        sel.register(sock, selectors.EVENT_READ, str(bind))
    deadline, resend = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline and any(v is None for v in answers.values()):
        if time.monotonic() >= resend:
            for sock, key in socks:
                if answers[key] is None:
                    txid = TxID(os.urandom(12))
                    txids[bytes(txid)] = key
                    sock.sendto(stun.binding_request(txid), server.as_tuple())
            resend = time.monotonic() + 0.3
        for sk, _ in sel.select(timeout=0.05):
            try:
                data, _src = sk.fileobj.recvfrom(2048)  # type: ignore[union-attr]
                msg = stun.decode(data)
            except (OSError, DecodeError):
                continue
            found = txids.get(bytes(msg.txid))
            if found is not None and msg.mapped_endpoint is not None:
                answers[found] = str(msg.mapped_endpoint)
    for sock, _ in socks:
        sock.close()
    return answers


@dataclass
class _Probe:
    tag: str
    sock: socket.socket
    peer: str
    start: float
    targets: list[Endpoint]
    heard: list[Endpoint] = field(default_factory=list)
    sent: int = 0
    seq: int = 0


def cmd_punch(start_at: float, duration: float, interval: float, specs: list[str]) -> dict[str, object]:
    sel = selectors.DefaultSelector()
    probes = []
    for spec in specs:
        tag, bind, target, peer, delay = spec.split(",")
        probe = _Probe(tag, _udp(Endpoint.parse(bind)), peer, start_at + float(delay), [Endpoint.parse(target)])
        sel.register(probe.sock, selectors.EVENT_READ, probe)
        probes.append(probe)
    late = max(0.0, time.time() - start_at)
    end = max(p.start for p in probes) + duration + interval
    while (now := time.time()) < end:
        for p in probes:
            while p.seq < round(duration / interval) and now >= p.start + p.seq * interval:
                for dest in p.targets:
                    try:
                        p.sock.sendto(craft(p.tag, p.seq, dest), dest.as_tuple())
                        p.sent += 1
                    except OSError:
                        pass
                p.seq += 1
        nxt = min([p.start + p.seq * interval for p in probes if p.seq < round(duration / interval)] + [end])
        for key, _ in sel.select(timeout=max(0.0, min(nxt - time.time(), 0.05))):
            p = key.data
            try:
                data, (ip, port) = p.sock.recvfrom(2048)
            except OSError:
                continue
            got = dissect(data)
            if got is None or got.sender.decode(errors="replace") != p.peer:
                continue
            src = Endpoint.parse(f"{ip}:{port}")
            if src not in p.heard:
                p.heard.append(src)
            if src not in p.targets:
                p.targets.append(src)  # peer-reflexive: answer where the peer's probe came from
    for p in probes:
        p.sock.close()
    return {
        "late": round(late, 4),
        "probes": [
            {"tag": p.tag, "sent": p.sent, "heard": [str(e) for e in p.heard], "targets": [str(e) for e in p.targets]}
            for p in probes
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.packets.punchprobe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stun", help="learn the public endpoint of each --bind from a STUN server")
    s.add_argument("--server", required=True, type=Endpoint.parse)
    s.add_argument("--bind", action="append", required=True, type=Endpoint.parse)
    s.add_argument("--timeout", type=float, default=3.0)
    p = sub.add_parser("punch", help="send and receive probes")
    p.add_argument("--start-at", type=float, required=True, help="wall-clock time (epoch seconds) of the start")
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--probe", action="append", required=True, help="TAG,BIND,TARGET,PEER,DELAY")
    args = parser.parse_args(argv)
    if args.cmd == "stun":
        out: object = cmd_stun(args.server, args.bind, args.timeout)
    else:
        out = cmd_punch(args.start_at, args.duration, args.interval, args.probe)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
