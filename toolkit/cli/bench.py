"""``natkit bench``: speed figures measured side by side in one run (see toolkit/packets/benchmark.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks: natkit against tshark, scapy, wireguard-go and coturn")
    bsub = p.add_subparsers(title="benchmarks", metavar="BENCH", required=True)

    mk = bsub.add_parser("make-pcap", help="write a mixed STUN/disco/WireGuard capture (and its keys file)")
    mk.add_argument("file", type=Path, help="the .pcap to write; FILE.keys.json is written beside it")
    mk.add_argument("-n", "--packets", type=int, default=100_000, help="how many packets (default 100000)")
    mk.add_argument("--seed", type=int, default=1, help="random seed: same seed, same bytes (default 1)")
    mk.set_defaults(func=run_make_pcap)

    dec = bsub.add_parser("decode", help="packets/s of classify+decode vs tshark -T fields on one capture")
    dec.add_argument("file", type=Path, help="a capture, e.g. from `natkit bench make-pcap`")
    dec.add_argument("--repeat", type=int, default=3, help="runs per contender; the median is reported (default 3)")
    dec.add_argument("--scapy-sample", type=int, default=5000, help="packets dissected by scapy (0 to skip)")
    dec.add_argument("--tshark", help="path of tshark (default: from PATH)")
    dec.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    dec.set_defaults(func=run_decode)

    tun = bsub.add_parser(
        "tunnel",
        help="TCP throughput (iperf3) through natkit<->natkit and wireguard-go<->wireguard-go WireGuard (root)",
    )
    tun.add_argument("--seconds", type=float, default=10.0, help="length of each iperf3 test (default 10)")
    tun.add_argument("--repeat", type=int, default=3, help="tests per contender; the median is reported (default 3)")
    tun.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    tun.set_defaults(func=run_tunnel)

    rel = bsub.add_parser(
        "relay",
        help="packets/s and latency through natkit's DERP relay and coturn's TURN relay on loopback",
        description="Start `natkit derp-server` and coturn's turnserver on 127.0.0.1, stream packets A->B through "
        "each with two clients, measure one-way latency, and print the medians and the ratio natkit / coturn.",
    )
    rel.add_argument(
        "--packets", type=int, default=20_000, metavar="N", help="packets per throughput run (default 20000)"
    )
    rel.add_argument("--size", type=int, default=1000, metavar="BYTES", help="bytes per packet (default 1000)")
    rel.add_argument(
        "--repeat", type=int, default=3, metavar="R", help="runs per relay; the median is reported (default 3)"
    )
    rel.add_argument(
        "--latency-samples", type=int, default=500, metavar="M", help="one-at-a-time packets for p50/p99 (default 500)"
    )
    rel.add_argument("--window", type=int, default=32, metavar="W", help="packets in flight at most (default 32)")
    rel.add_argument(
        "--turn-peer",
        choices=("relayed", "direct"),
        default="relayed",
        help="relayed: both clients allocate (like DERP, default); direct: only A allocates, B is plain UDP",
    )
    rel.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    rel.set_defaults(func=run_relay)

    lab = bsub.add_parser(
        "lab",
        help="time to bring a two-NAT lab up (until reachable) and down on sim, netns and docker",
        description="Bring a scenario up and down R times on each backend (interleaved) and print the medians, the "
        "ratios and the goals (sim up < 50 ms, netns up < 0.5 s, docker up within 10x of netns). up = lab.up() "
        "plus a probe until every service answers from the node hosts through their NATs; down = lab.down(). "
        "Docker's engine start and image build happen before timing and are reported apart.",
    )
    lab.add_argument("--scenario", default="easy-easy", help="a scenario from `natkit lab list` (default easy-easy)")
    lab.add_argument("--repeat", type=int, default=5, metavar="R", help="runs per backend; median reported (default 5)")
    lab.add_argument(
        "--backends",
        metavar="LIST",
        help="comma-separated backends to measure (default: sim,netns,docker; those that cannot run are skipped)",
    )
    lab.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    lab.set_defaults(func=run_lab)

    up = bsub.add_parser(
        "upgrade",
        help="time from the first packet to a direct path (DirectActive): sim vs the physical minimum, netns vs aioice",
        description="Two nodes on scenario easy-easy: alice sends to bob; the time from alice's first packet to each "
        "node's first DirectActive, from their trace records. sim (link latencies set): as a ratio to the physical "
        "minimum, one DERP delivery of CallMeMaybe plus one direct round trip (goal <= 1.2x). netns (root): against "
        "aioice establishing an ICE connection between the same hosts with the same STUN server, interleaved in the "
        "same run (goal: natkit <= 0.5x aioice); also each node's idle CPU and peak memory (VmHWM).",
    )
    up.add_argument("--repeat", type=int, default=5, metavar="R", help="runs per backend; median reported (default 5)")
    up.add_argument(
        "--backends",
        metavar="LIST",
        help="comma-separated backends to measure (default: sim,netns; those that cannot run are skipped)",
    )
    up.add_argument(
        "--idle",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds the netns nodes idle for the CPU figure (default 5)",
    )
    up.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    up.set_defaults(func=run_upgrade)


def run_make_pcap(args: argparse.Namespace) -> int:
    from toolkit.packets.benchmark import make_capture

    info = make_capture(args.file, n=args.packets, seed=args.seed)
    print(f"wrote {info['packets']} packets to {info['path']} (keys: {info['keys']})")
    print("mix: " + ", ".join(f"{k}={v}" for k, v in info["mix"].items()))  # type: ignore[attr-defined]
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from toolkit.errors import UsageError
    from toolkit.packets.benchmark import format_report, run_decode_bench

    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")
    report = run_decode_bench(args.file, repeat=args.repeat, scapy_sample=args.scapy_sample, tshark=args.tshark)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def run_tunnel(args: argparse.Namespace) -> int:
    import sys

    from toolkit.node.benchtunnel import format_report, run_tunnel_bench

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run_tunnel_bench(seconds=args.seconds, repeat=args.repeat, progress=progress)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def run_relay(args: argparse.Namespace) -> int:
    import sys

    from toolkit.services.benchrelay import format_report, run_relay_bench

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run_relay_bench(
        packets=args.packets,
        size=args.size,
        repeat=args.repeat,
        latency_samples=args.latency_samples,
        window=args.window,
        turn_peer=args.turn_peer,
        progress=progress,
    )
    print(json.dumps(report) if args.format == "json" else format_report(report))
    return 0


def run_lab(args: argparse.Namespace) -> int:
    import sys

    from toolkit.lab.benchlab import format_report as format_lab_report
    from toolkit.lab.benchlab import run_lab_bench

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    report = run_lab_bench(args.scenario, args.repeat, backends, explicit=args.backends is not None, progress=progress)
    print(json.dumps(report) if args.format == "json" else format_lab_report(report))
    failed = [b for b in ("sim", "netns", "docker") if isinstance(report.get(b), dict) and report[b].get("error")]
    return 1 if failed else 0


def run_upgrade(args: argparse.Namespace) -> int:
    import sys

    from toolkit.lab.benchupgrade import failed, run_upgrade_bench
    from toolkit.lab.benchupgrade import format_report as format_upgrade_report

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    report = run_upgrade_bench(
        args.repeat, backends, idle=args.idle, explicit=args.backends is not None, progress=progress
    )
    print(json.dumps(report) if args.format == "json" else format_upgrade_report(report))
    return 1 if failed(report) else 0
