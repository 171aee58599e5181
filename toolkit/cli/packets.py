"""`natkit sniff` and `natkit decode`: watch STUN, disco, WireGuard and DERP, one lesson line per packet.

``natkit sniff [-i IFACE] [--netns NS] [--keys FILE] [-w FILE] [-c COUNT] [--timeout S] [-v]``
captures live (root); ``natkit decode FILE [--keys FILE] [-v]`` reads a pcap or pcapng file through
the same pipeline (:mod:`toolkit.packets.dissect`). Each line is: frame number, seconds since the
first line, source -> destination, and what the packet is. ``--keys`` opens disco boxes (format in
:mod:`toolkit.packets.keyring`); ``-v`` adds scapy's dissection, the decrypted disco message
included. The counts go to stderr at the end, like tcpdump's.

Heavy imports (scapy) happen inside ``run`` so that ``natkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.packets.dissect import Event


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sniff",
        help="capture live and explain STUN, disco, WireGuard and DERP packets (root)",
        description="Capture live on an interface (all interfaces by default) and print one line per "
        "STUN, disco, WireGuard or DERP packet; disco boxes are opened with --keys.",
    )
    p.add_argument("-i", "--interface", dest="iface", metavar="IFACE", help="interface (default: all)")
    p.add_argument("--netns", metavar="NS", help="capture inside this network namespace (see `ip netns list`)")
    p.add_argument("--keys", metavar="FILE", help="keys file (JSON) to open disco boxes")
    p.add_argument("-w", "--write", metavar="FILE", help="also write every captured frame (.pcapng: pcapng)")
    p.add_argument("-c", "--count", type=_non_negative_int, default=0, metavar="COUNT", help="stop after COUNT lines")
    p.add_argument("--timeout", type=_non_negative_float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="print scapy's dissection of each packet")
    p.set_defaults(func=run_sniff)

    d = sub.add_parser(
        "decode",
        help="explain the STUN, disco, WireGuard and DERP packets of a pcap/pcapng file",
        description="Read a capture file and print one line per STUN, disco, WireGuard or DERP packet; "
        "disco boxes are opened with --keys.",
    )
    d.add_argument("file", metavar="FILE", help="a .pcap or .pcapng file")
    d.add_argument("--keys", metavar="FILE", help="keys file (JSON) to open disco boxes")
    d.add_argument("-v", "--verbose", action="store_true", help="print scapy's dissection of each packet")
    d.set_defaults(func=run_decode)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


class _Printer:
    """Prints events as they come: times relative to the first frame, dissection with -v."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.t0: float | None = None

    def __call__(self, event: Event) -> None:
        if self.t0 is None:
            self.t0 = event.ts
        print(event.line(self.t0), flush=not self.verbose)
        if self.verbose:
            try:
                text = event.dissection()
            except Exception as exc:  # a dissection problem must not end the capture
                text = f"(scapy could not dissect this packet: {type(exc).__name__}: {exc})"
            print(textwrap.indent(text.rstrip("\n"), "      "), flush=True)


def run_sniff(args: argparse.Namespace) -> int:
    from toolkit.packets.keyring import load_keyring
    from toolkit.packets.sniffer import Sniffer

    keyring = load_keyring(args.keys)  # a bad keys file is reported before capture starts
    sniffer = Sniffer(
        args.iface,
        netns=args.netns,
        keyring=keyring,
        write=args.write,
        count=args.count,
        timeout=args.timeout,
        on_event=_Printer(args.verbose),
    )
    try:
        stats = sniffer.run()
    except KeyboardInterrupt:
        stats = sniffer.stats
    print(stats.format(), file=sys.stderr)
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from toolkit.packets.dissect import Analyzer
    from toolkit.packets.keyring import load_keyring
    from toolkit.packets.sniffer import read_file

    keyring = load_keyring(args.keys)
    analyzer = Analyzer(keyring)
    printer = _Printer(args.verbose)
    for event in read_file(args.file, analyzer=analyzer):
        printer(event)
    print(analyzer.stats.format(), file=sys.stderr)
    return 0
