"""``natkit bench make-pcap`` and ``natkit bench decode``: natkit's codec path against tshark.

make-pcap writes a mixed capture like one a lab produces: STUN (Tailscale ``tailnode``
requests and XOR-MAPPED responses, v4 and v6), sealed disco (Ping, Pong, CallMeMaybe between
two lab nodes) and WireGuard (all four message types, transport sizes as real traffic has
them), with a keys file beside it so ``natkit decode`` can open the disco boxes.

decode measures, side by side in one run and with the median of several repeats:
- natkit end to end: read the pcap, strip Ethernet/IP/UDP (pcapio), classify and decode every
  datagram (codec.demux.decode_datagram), count kinds and errors;
- natkit codec only: classify+decode on payloads already in memory;
- tshark: ``tshark -r FILE -T fields`` with STUN and WireGuard fields, the whole process timed;
- scapy: full dissection with natkit's layers, on a sample (it is far slower).
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from toolkit.codec import demux, disco, stun, wireguard
from toolkit.crypto import disco as disco_crypto
from toolkit.crypto import keys
from toolkit.errors import UsageError
from toolkit.packets import pcapio
from toolkit.packets.keyring import Keyring, keys_path_for
from toolkit.types import Endpoint, TxID

WG_PORT = 41641
STUN_PORT = 3478
# Transport payload sizes (before padding): keepalives, ACK-sized, MTU-sized (IPv4 in a 1280 tunnel).
_TRANSPORT_SIZES = (0, 40, 52, 100, 576, 1240)


@dataclass
class Mix:
    counts: Counter[str] = field(default_factory=Counter)


def make_capture(path: str | Path, n: int = 100_000, seed: int = 1) -> dict[str, object]:
    """Write ``n`` packets to ``path`` (pcap, Ethernet) and ``path.keys.json``; return what was written."""
    if n <= 0:
        raise UsageError(f"-n must be positive, got {n}")
    rng = random.Random(seed)
    base = seed.to_bytes(8, "big", signed=True)
    a_disco, a_pub = keys.disco_key_pair(base + b"disco-a")
    b_disco, b_pub = keys.disco_key_pair(base + b"disco-b")
    _, a_node = keys.node_key_pair(base + b"node-a")
    hosts = [("192.168.1.10", "203.0.113.7"), ("192.168.2.20", "198.51.100.9")]
    stun_v6 = ("2001:db8:1::10", "2001:db8:ff::3478")
    mix: Counter[str] = Counter()
    t0 = 1_700_000_000.0
    path = Path(path)
    with pcapio.PcapWriter(path) as w:
        for i in range(n):
            r = rng.random()
            ts = t0 + i * 1e-4
            if r < 0.2:  # STUN: request and response pairs, some over IPv6
                txid = TxID(rng.randbytes(12))
                lan, pub = stun_v6 if rng.random() < 0.25 else hosts[rng.randrange(2)]
                if i % 2 == 0:
                    frame = pcapio.udp_frame(lan, WG_PORT, pub, STUN_PORT, stun.tailnode_request(txid))
                    mix["stun-request"] += 1
                else:
                    mapped = Endpoint.parse(f"[{lan}]:{WG_PORT}" if ":" in lan else f"{lan}:{WG_PORT}")
                    frame = pcapio.udp_frame(pub, STUN_PORT, lan, WG_PORT, stun.binding_response(txid, mapped))
                    mix["stun-response"] += 1
            elif r < 0.5:  # disco between the two nodes, sealed with the lab's keys
                txid = TxID(rng.randbytes(12))
                k = rng.random()
                msg: disco.Message
                if k < 0.45:
                    msg, name = disco.Ping(txid, a_node), "disco-ping"
                elif k < 0.9:
                    msg, name = disco.Pong(txid, Endpoint.parse("203.0.113.7:41641")), "disco-pong"
                else:
                    eps = (Endpoint.parse("203.0.113.7:41641"), Endpoint.parse("192.168.1.10:41641"))
                    msg, name = disco.CallMeMaybe(eps), "disco-callmemaybe"
                sender, receiver = (a_disco, b_pub) if rng.random() < 0.5 else (b_disco, a_pub)
                sealed = disco_crypto.seal_message(msg, sender, receiver, nonce=rng.randbytes(24))
                frame = pcapio.udp_frame(hosts[0][0], WG_PORT, hosts[1][1], WG_PORT, sealed)
                mix[name] += 1
            else:  # WireGuard
                k = rng.random()
                wmsg: wireguard.Message
                if k < 0.02:
                    wmsg = wireguard.Initiation(
                        rng.getrandbits(32),
                        rng.randbytes(32),
                        rng.randbytes(48),
                        rng.randbytes(28),
                        rng.randbytes(16),
                        bytes(16),
                    )
                    name = "wg-initiation"
                elif k < 0.04:
                    wmsg = wireguard.Response(
                        rng.getrandbits(32),
                        rng.getrandbits(32),
                        rng.randbytes(32),
                        rng.randbytes(16),
                        rng.randbytes(16),
                        bytes(16),
                    )
                    name = "wg-response"
                elif k < 0.05:
                    wmsg = wireguard.CookieReply(rng.getrandbits(32), rng.randbytes(24), rng.randbytes(32))
                    name = "wg-cookie-reply"
                else:
                    size = rng.choice(_TRANSPORT_SIZES)
                    padded = (size + 15) // 16 * 16
                    wmsg = wireguard.Transport(rng.getrandbits(32), i, rng.randbytes(padded + 16))
                    name = "wg-transport"
                frame = pcapio.udp_frame(hosts[0][0], WG_PORT, hosts[1][1], WG_PORT, wmsg.encode())
                mix[name] += 1
            w.write(frame, ts)
    keyfile = keys_path_for(path)
    Keyring([a_disco, b_disco]).save(keyfile)
    return {"path": str(path), "keys": str(keyfile), "packets": n, "mix": dict(sorted(mix.items()))}


_R = TypeVar("_R")


def _median_time(fn: Callable[[], _R], repeat: int) -> tuple[float, _R]:
    times: list[float] = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result  # repeat >= 1, so result is bound


def _natkit_end_to_end(path: Path) -> Counter[str]:
    kinds: Counter[str] = Counter()
    decode = demux.decode_datagram
    for t in pcapio.udp_payloads(path):
        d = decode(t.payload)
        kinds["error" if d.error is not None else d.kind.value] += 1
    return kinds


def _codec_only(payloads: list[bytes]) -> int:
    decode = demux.decode_datagram
    errors = 0
    for p in payloads:
        if decode(p).error is not None:
            errors += 1
    return errors


TSHARK_FIELDS = ("frame.number", "stun.type", "stun.att.ipv4", "stun.att.port", "wg.type", "wg.sender", "wg.receiver")


def tshark_command(tshark: str, path: Path) -> list[str]:
    cmd = [tshark, "-r", str(path), "-n", "-d", f"udp.port=={WG_PORT},wg", "-T", "fields"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    return cmd


def _tshark(cmd: list[str]) -> dict[str, int]:
    """Run tshark; count the rows it dissected as STUN and as WireGuard (columns 2 and 5)."""
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    counts = {"rows": 0, "stun": 0, "wireguard": 0}
    for line in out.split(b"\n"):
        if not line:
            continue
        cols = line.split(b"\t")
        counts["rows"] += 1
        counts["stun"] += bool(cols[1])
        counts["wireguard"] += bool(cols[4])
    return counts


def _scapy_rate(path: Path, sample: int) -> tuple[float, int]:
    from scapy.layers.l2 import Ether

    import toolkit.packets  # noqa: F401  (installs natkit's content-based bindings)

    frames = [rec.data for _, rec in zip(range(sample), pcapio.read_records(path), strict=False)]
    t = time.perf_counter()
    for f in frames:
        Ether(f).summary()
    return time.perf_counter() - t, len(frames)


def run_decode_bench(
    path: str | Path, *, repeat: int = 3, scapy_sample: int = 5000, tshark: str | None = None
) -> dict[str, object]:
    """Measure and return the figures (rates in packets/s); see the module docstring."""
    path = Path(path)
    payloads = [t.payload for t in pcapio.udp_payloads(path)]
    n = len(payloads)
    if n == 0:
        raise UsageError(f"{path}: no UDP packets to decode (make one with `natkit bench make-pcap FILE`)")
    e2e_s, kinds = _median_time(lambda: _natkit_end_to_end(path), repeat)
    codec_s, _ = _median_time(lambda: _codec_only(payloads), repeat)
    result: dict[str, object] = {
        "packets": n,
        "repeat": repeat,
        "kinds": dict(sorted(kinds.items())),
        "natkit_end_to_end_pps": n / e2e_s,
        "natkit_codec_only_pps": n / codec_s,
    }
    tshark = tshark or shutil.which("tshark")
    if tshark:
        cmd = tshark_command(tshark, path)
        ts_s, counts = _median_time(lambda: _tshark(cmd), repeat)
        result["tshark_pps"] = n / ts_s
        result["tshark_counts"] = counts
        result["tshark_command"] = " ".join(cmd)
        result["ratio_end_to_end_vs_tshark"] = ts_s / e2e_s
        result["ratio_codec_vs_tshark"] = ts_s / codec_s
    if scapy_sample > 0:
        sc_s, sc_n = _scapy_rate(path, min(scapy_sample, n))
        result["scapy_dissect_pps"] = sc_n / sc_s
        result["scapy_sample"] = sc_n
    return result


def format_report(r: dict[str, object]) -> str:
    lines = [f"capture: {r['packets']} UDP packets  kinds: {r['kinds']}", f"median of {r['repeat']} runs:"]
    lines.append(f"  natkit read+classify+decode   {r['natkit_end_to_end_pps']:>12,.0f} pkt/s")
    lines.append(f"  natkit classify+decode only   {r['natkit_codec_only_pps']:>12,.0f} pkt/s")
    if "tshark_pps" in r:
        lines.append(
            f"  tshark -T fields              {r['tshark_pps']:>12,.0f} pkt/s  (dissected {r['tshark_counts']})"
        )
    if "scapy_dissect_pps" in r:
        lines.append(
            f"  scapy full dissection         {r['scapy_dissect_pps']:>12,.0f} pkt/s  ({r['scapy_sample']} sampled)"
        )
    if "tshark_pps" in r:
        lines.append(f"ratio natkit end-to-end / tshark: {r['ratio_end_to_end_vs_tshark']:.2f}  (goal >= 1.0)")
        lines.append(f"ratio natkit codec only / tshark: {r['ratio_codec_vs_tshark']:.2f}")
    else:
        lines.append("tshark not found: install Debian's tshark to compare (make test as root installs it)")
    return "\n".join(lines)
