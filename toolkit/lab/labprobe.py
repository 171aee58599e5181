"""The reachability probe of a lab: from every node host, STUN through its NAT and TCP to every service.

``natkit bench lab`` counts a lab as up only once :func:`probe` succeeds (see :mod:`toolkit.lab.benchlab`).
On ``netns`` and ``docker`` the probe is a tiny stdlib-only Python program run on the host with
:meth:`~toolkit.lab.backend.Lab.run`, retrying until every target answers; each STUN answer's
XOR-MAPPED-ADDRESS must be the WAN address of the outermost NAT in front of the host (the packet really
went through the NAT). In ``sim`` it is a virtual UDP socket and the STUN part only (no TCP services yet).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sys

from toolkit.codec import stun
from toolkit.errors import NatkitError
from toolkit.lab.backend import Lab
from toolkit.lab.labservices import listen_port, service_args
from toolkit.lab.topology import Topology
from toolkit.types import Endpoint, TxID

PROBE_DEADLINE = 20.0  # seconds the probe may retry before the lab counts as not reachable

# Run on a lab host with `python3 -I -S -c PROBE DEADLINE TARGET...`; TARGET = "udp,IP,PORT,HEX" | "tcp,IP,PORT,".
# Stdlib only and no site import, so it starts in ~15 ms. Prints "ok KIND IP:PORT [HEX]" per target.
PROBE = r"""
import socket, sys, time
end = time.monotonic() + float(sys.argv[1]); bad = 0
for spec in sys.argv[2:]:
    kind, ip, port, req = spec.split(","); dst = (ip, int(port)); got = None
    while got is None and time.monotonic() < end:
        try:
            if kind == "tcp":
                socket.create_connection(dst, 0.2).close(); got = ""
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)
                s.sendto(bytes.fromhex(req), dst)
                while got is None:
                    data, src = s.recvfrom(2048)
                    if data[8:20] == bytes.fromhex(req)[8:20]: got = data.hex()
                s.close()
        except OSError:
            time.sleep(0.01)
    print("ok" if got is not None else "fail", kind, "%s:%s" % dst, got or "", flush=True); bad += got is None
sys.exit(1 if bad else 0)
"""


def probe_sources(topo: Topology) -> list[str]:
    """The hosts the probe runs on: node hosts, else hosts behind a router, else the first host."""
    return [h.name for h in (topo.nodes() or topo.lan_hosts() or topo.hosts[:1])]


def probe_targets(topo: Topology, *, tcp: bool = True) -> list[tuple[str, Endpoint]]:
    """("udp"|"tcp", endpoint) of every service of the topology (STUN: every --listen address)."""
    found: list[tuple[str, Endpoint]] = []
    for host in topo.hosts:
        for spec in host.services:
            if spec.kind == "stun-server":
                args = service_args(host, spec)
                found += [("udp", Endpoint.parse(v)) for f, v in itertools.pairwise(args) if f == "--listen"]
            elif tcp:
                found.append(("tcp", Endpoint.parse(f"{host.v4}:{listen_port(host, spec)}")))
    return found


def expected_public(topo: Topology, host: str) -> str:
    """The address STUN servers see ``host`` as: the WAN address of the outermost NAT, else its own."""
    nats = [r for r in topo.path_to_internet(host) if r.nat is not None]
    return str(nats[-1].wan_v4) if nats else str(topo.host(host).v4)


def check_stun(host: str, target: Endpoint, answer: bytes, public: str) -> str:
    """The mapped endpoint of a STUN answer; :class:`NatkitError` unless it is a success through the NAT."""
    msg = stun.decode(answer)
    mapped = msg.mapped_endpoint
    if msg.msg_class is not stun.Class.SUCCESS or mapped is None:
        raise NatkitError(f"probe from {host}: {target} answered without a mapped address")
    if str(mapped.ip) != public:
        raise NatkitError(f"probe from {host}: {target} saw {mapped}, not the NAT's WAN address {public}")
    return str(mapped)


async def probe(lab: Lab) -> list[str]:
    """Wait until every service answers from every probe host; one line per answer ("alice -> ... mapped ...")."""
    topo = lab.topology
    if lab.backend == "sim":
        return _probe_sim(lab)
    python = sys.executable if lab.backend == "netns" else "python3"
    results = await asyncio.gather(*(_probe_host(lab, python, h) for h in probe_sources(topo)))
    return [line for lines in results for line in lines]


async def _probe_host(lab: Lab, python: str, host: str) -> list[str]:
    targets = probe_targets(lab.topology)
    args = []
    for kind, ep in targets:
        req = stun.binding_request(TxID(secrets.token_bytes(12))).hex() if kind == "udp" else ""
        args.append(f"{kind},{ep.ip},{ep.port},{req}")
    result = await lab.run(host, [python, "-I", "-S", "-c", PROBE, str(PROBE_DEADLINE), *args],
                           timeout=PROBE_DEADLINE + 10)  # fmt: skip
    lines = result.stdout.split("\n")
    if not result.ok:
        failed = [ln for ln in lines if ln.startswith("fail")] or [result.stderr.strip()[-200:]]
        raise NatkitError(f"probe from {host}: not reachable after {PROBE_DEADLINE:.0f}s: {'; '.join(failed)}")
    public = expected_public(lab.topology, host)
    report = []
    for line in filter(None, lines):
        _, kind, where, answer = [*line.split(" "), ""][:4]
        if kind == "udp":
            mapped = check_stun(host, Endpoint.parse(where), bytes.fromhex(answer), public)
            report.append(f"{host} -> stun {where}: mapped {mapped}")
        else:
            report.append(f"{host} -> tcp {where}: connected")
    return report


def _probe_sim(lab: Lab) -> list[str]:
    from toolkit.lab.sim import SimLab
    from toolkit.lab.sim.sockets import UdpSocket

    assert isinstance(lab, SimLab) and lab.world is not None
    world, report = lab.world, []
    for host in probe_sources(lab.topology):
        public = expected_public(lab.topology, host)
        for _, target in probe_targets(lab.topology, tcp=False):
            sock = UdpSocket(world.machine(host))
            try:
                sock.sendto(stun.binding_request(TxID(secrets.token_bytes(12))), target)
                if not world.sched.run_while(lambda s=sock: not s.inbox, 5.0):  # type: ignore[misc]
                    raise NatkitError(f"probe from {host}: no answer from {target} in the sim")
                data, _ = sock.inbox.popleft()
            finally:
                sock.close()
            report.append(f"{host} -> stun {target}: mapped {check_stun(host, target, data, public)}")
    return report


__all__ = ["PROBE", "PROBE_DEADLINE", "check_stun", "expected_public", "probe", "probe_sources", "probe_targets"]
