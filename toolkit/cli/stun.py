"""`natkit stun` and `natkit nat-type`: what a STUN server sees of you, and what kind of NAT is in between.

``natkit stun HOST[:PORT] [--count N] [--interval S] [--local ADDR] [--format text|json]`` sends
Binding requests (RFC 8489; port 3478 by default, names are resolved) from one local socket and
prints the mapped address and the round-trip time of each, like ``ping``. ``natkit nat-type
HOST[:PORT] [--hairpin] [--lifetime [--max-lifetime S]]`` runs RFC 5780 behaviour discovery
(:mod:`toolkit.sansio.natbehavior`) against a server with two addresses (coturn, natkit's
stun-server) and prints the verdict and, for each test, what was sent from which socket and what
came back.

Both take the RFC 8489 §6.2.1 retransmission knobs ``--rto``, ``--rc`` and ``--rm``. ``stun`` uses
the RFC values, ``Timing``'s defaults (7 requests, give up after 39.5 s); ``nat-type`` defaults to 4
requests and ``--rm 4`` (5.5 s; :data:`NAT_TYPE_RC`, :data:`NAT_TYPE_RM`), because each test that
expects silence waits that long. That preset is the command's choice, not a protocol timer, so it
lives here rather than in ``Timing``. ``--trace`` prints every packet and transition to stderr as it happens.

Bad input is one line and exit 2; a server that does not answer is one line and exit 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING, Any

from toolkit.errors import NatkitError, UsageError
from toolkit.timing import DEFAULT

if TYPE_CHECKING:
    from toolkit.sansio.natreport import Evidence, NatReport
    from toolkit.sansio.trace import Tracer
    from toolkit.timing import Timing
    from toolkit.types import Endpoint

# `natkit nat-type`'s fast preset (RFC 8489 §6.2.1 with RTO 0.5 s): requests at 0, 0.5, 1.5 and 3.5 s, then
# a last wait of 4 x RTO, so silence is decided after 5.5 s instead of 39.5 s, in each test that expects it.
NAT_TYPE_RC = 4
NAT_TYPE_RM = 4


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stun",
        help="ask a STUN server for your mapped address and the round-trip time",
        description="Send STUN Binding requests (RFC 8489) and print the mapped address and RTT of each answer.",
    )
    p.add_argument("server", metavar="HOST[:PORT]", help="STUN server (default port 3478); [v6]:port for IPv6")
    p.add_argument("--count", "-c", type=int, default=1, metavar="N", help="queries to send, from one socket")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between queries (default 1)")
    _common(p, rc=DEFAULT.stun_rc, rm=DEFAULT.stun_rm)
    p.set_defaults(func=run_stun)

    n = sub.add_parser(
        "nat-type",
        help="discover NAT mapping, filtering, hairpinning and binding lifetime (RFC 5780)",
        description="Run RFC 5780 NAT behaviour discovery against a STUN server with two addresses and "
        "print the verdict with the evidence of each test.",
    )
    n.add_argument("server", metavar="HOST[:PORT]", help="RFC 5780 STUN server (default port 3478)")
    n.add_argument("--hairpin", action="store_true", help="also test hairpinning (RFC 5780 §4.5)")
    n.add_argument("--lifetime", action="store_true", help="also measure the binding lifetime (RFC 5780 §4.6)")
    n.add_argument(
        "--max-lifetime", type=float, default=60.0, metavar="S", help="longest idle time to try (default 60)"
    )
    _common(n, rc=NAT_TYPE_RC, rm=NAT_TYPE_RM)
    n.set_defaults(func=run_nat_type)


def _common(p: argparse.ArgumentParser, *, rc: int, rm: int) -> None:
    p.add_argument("--local", metavar="ADDR", help="local IP or IP:PORT to send from (default: the route's address)")
    p.add_argument("--format", default="text", choices=("text", "json"), help="output format")
    rto = DEFAULT.stun_rto
    p.add_argument(
        "--rto", type=float, default=rto, metavar="S", help=f"first retransmission timeout (default {rto:g})"
    )
    p.add_argument("--rc", type=int, default=rc, metavar="N", help=f"requests per transaction (default {rc})")
    p.add_argument("--rm", type=int, default=rm, metavar="N", help=f"last wait, in RTOs (default {rm})")
    p.add_argument("--trace", action="store_true", help="print every packet and transition to stderr")


def _timing(args: argparse.Namespace) -> Timing:
    if not args.rto > 0:
        raise UsageError(f"--rto {args.rto}: give a positive number of seconds")
    for name in ("rc", "rm"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} {getattr(args, name)}: give a whole number of at least 1")
    return DEFAULT.replace(stun_rto=args.rto, stun_rc=args.rc, stun_rm=args.rm)


def _local(text: str | None) -> Endpoint | None:
    from toolkit.types import Endpoint

    if text is None:
        return None
    try:
        return Endpoint(ipaddress.ip_address(text.strip("[]")), 0)
    except ValueError:
        pass
    try:
        return Endpoint.parse(text)
    except UsageError:
        raise UsageError(f"--local {text!r}: give an IP address or IP:PORT ([v6]:PORT for IPv6)") from None


def _tracer(args: argparse.Namespace) -> Tracer | None:
    if not args.trace:
        return None
    return lambda record: print(record.summary(), file=sys.stderr, flush=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


# --- natkit stun ------------------------------------------------------------------------------------


def run_stun(args: argparse.Namespace) -> int:
    import asyncio
    import json

    if args.count < 1:
        raise UsageError(f"--count {args.count}: give at least 1")
    if args.interval < 0:
        raise UsageError(f"--interval {args.interval}: give 0 or more seconds")
    timing, local, tracer = _timing(args), _local(args.local), _tracer(args)
    text = args.format == "text"
    results: list[dict[str, Any]] = []

    async def main() -> tuple[Endpoint, Endpoint]:
        from toolkit.services.stunclient import StunError, open_udp_socket, resolve_server, stun_query

        server = await resolve_server(args.server)
        with open_udp_socket(server, local) as sock:
            here = _sock_endpoint(sock)
            if text:
                print(f"STUN {server} from {here}", flush=True)
            for i in range(args.count):
                if i:
                    await asyncio.sleep(args.interval)
                try:
                    r = await stun_query(server, timing=timing, sock=sock, tracer=tracer)
                except StunError as exc:
                    if args.count == 1:
                        raise
                    results.append({"error": str(exc)})
                    if text:
                        print(f"query {i + 1}: {exc}", flush=True)
                    continue
                results.append(r.to_dict())
                if text:
                    print(f"query {i + 1}: {_query_line(r.mapped, r.local, r.rtt, r.sends, r.software)}", flush=True)
        return server, here

    server, here = asyncio.run(main())
    answered = [r for r in results if "error" not in r]
    if text and args.count > 1:
        rtts = [r["rtt_ms"] for r in answered]
        line = f"{args.count} queries, {len(answered)} answered"
        if rtts:
            line += f", rtt min/avg/max {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/{max(rtts):.3f} ms"
        print(line)
    if not text:
        print(json.dumps({"server": str(server), "local": str(here), "queries": results}, indent=2))
    if not answered:
        print(f"natkit: error: no answer from {server}", file=sys.stderr)
        return 1
    return 0


def _sock_endpoint(sock: Any) -> Endpoint:
    from toolkit.services.sockets import endpoint_of

    return endpoint_of(sock.getsockname(), keep_scope=False)


def _query_line(mapped: Endpoint, local: Endpoint, rtt: float, sends: int, software: str | None) -> str:
    nat = "no NAT: mapped = local" if mapped == local else f"behind a NAT: local {local}"
    retrans = f" after {sends} requests (rtt from the last one)" if sends > 1 else ""
    server = f", server {software!r}" if software else ""
    return f"mapped {mapped}  rtt {_ms(rtt)}{retrans}  ({nat}{server})"


# --- natkit nat-type --------------------------------------------------------------------------------


def run_nat_type(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from toolkit.services.stunclient import discover_nat, resolve_server

    if not args.max_lifetime > 0:
        raise UsageError(f"--max-lifetime {args.max_lifetime}: give a positive number of seconds")
    if args.max_lifetime != 60.0 and not args.lifetime:
        raise UsageError("--max-lifetime only makes sense with --lifetime")
    timing, local, tracer = _timing(args), _local(args.local), _tracer(args)

    async def main() -> NatReport:
        server = await resolve_server(args.server)
        return await discover_nat(
            server,
            hairpin=args.hairpin,
            lifetime=args.lifetime,
            timing=timing,
            local=local,
            max_lifetime=args.max_lifetime,
            lifetime_start=min(1.0, args.max_lifetime),
            tracer=tracer,
        )

    report = asyncio.run(main())
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif report.udp_blocked:
        sends = report.tests[0].sends if report.tests else 0
        raise NatkitError(
            f"no answer from {report.server} after {sends} requests: UDP is blocked, or no STUN server listens there"
        )
    else:
        print(format_report(report), end="")
    return 1 if report.udp_blocked or report.behind_nat is None else 0


def format_report(report: NatReport) -> str:
    """The verdict and the evidence, laid out for a student to read."""
    soft = f" ({report.server_software})" if report.server_software else ""
    lines = [f"NAT behaviour discovery (RFC 5780) with STUN server {report.server}{soft}"]
    lines.append(f"  local address    {report.local or 'unknown'}")
    lines.append(f"  mapped address   {report.mapped or 'unknown'}")
    if report.other_address is not None:
        lines.append(f"  other address    {report.other_address}  (the server's second IP and port)")
    lines += ["", f"verdict: {report.verdict()}"]
    mapping = report.mapping or "unknown"
    article = {"easy": "an easy", "hard": "a hard"}.get(report.tailscale_kind or "")
    kind = f"; Tailscale calls this {article} NAT" if article else ""
    lines.append(f"  mapping          {mapping}  (RFC 4787 §4.1{kind})")
    lines.append(f"  filtering        {report.filtering or 'unknown'}  (RFC 4787 §5)")
    if report.hairpinning is not None:
        lines.append(f"  hairpinning      {'yes' if report.hairpinning else 'no'}  (RFC 4787 §6)")
    if report.lifetime_tested:
        lines.append(f"  mapping lifetime {report.lifetime_text()}  (RFC 4787 §4.3)")
    if report.classic_name:
        lines.append(f"  classic name     {report.classic_name}  (RFC 3489)")
    lines += ["", "evidence:"]
    bindings = [e for e in report.tests if e.test.startswith("lifetime binding")]
    width = max((len(e.test) for e in report.tests), default=0)
    for e in report.tests:
        if e in bindings and e.outcome == "answered":
            continue  # summed up below; each probe line names its binding
        lines += _evidence(e, width)
    if bindings:
        opened = sum(e.outcome == "answered" for e in bindings)
        probed = sum(e.test.startswith("lifetime probe") and e.outcome != "cancelled" for e in report.tests)
        lines.append(
            f"  lifetime bindings: {opened} of {len(bindings)} opened at once, {probed} probed once each "
            "(longer waits are not probed once one binding has expired)"
        )
    if report.notes:
        lines += ["", "notes:", *(f"  - {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def _evidence(e: Evidence, width: int) -> list[str]:
    attrs = f"  {', '.join(e.attributes)}" if e.attributes else ""
    sent = f"  {e.test:<{width}}  sent from {e.socket} {e.local or '?'} to {e.sent_to}{attrs}"
    if e.outcome == "answered" and e.received_on is not None:
        got = f"answer on {e.received_on} from {e.source}"
        if e.mapped is not None:
            got += f": mapped {e.mapped}"
        if e.rtt is not None:
            got += f", {_ms(e.rtt)}"
    elif e.outcome == "no answer":
        got = f"no answer after {e.sends} request{'s' if e.sends != 1 else ''}"
    elif e.outcome == "error response":
        got = f"error response {e.error}"
    else:
        got = e.outcome
    out = [sent, f"  {'':<{width}}  -> {got}"]
    if e.note:
        out.append(f"  {'':<{width}}     {e.note}")
    return out
