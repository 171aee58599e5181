"""`natkit netcheck`: measure UDP, NAT mapping and DERP latencies like `tailscale netcheck`.

``natkit netcheck --derp-map FILE|URL [--format text|json|json-line] [--every SECONDS] [--verbose]``
loads a DERP map (Tailscale's ``tailcfg.DERPMap`` JSON: a file, or an ``http(s)://`` URL such as the
coordination server's ``/derpmap``), sends Tailscale's STUN probes to every region
(:mod:`toolkit.services.netcheck`, protocols.md §5.2) and prints the report in Tailscale's layout
(protocols.md §5.3) or as Tailscale's JSON. ``--every`` repeats with incremental reports (a full one
every 5 minutes) until Ctrl-C. ``--verbose`` also traces every probe and reply to stderr and shows
the region numbers.

A map that cannot be read or is not a DERP map is one line on stderr and exit status 2. No UDP at all
is not an error: the report says ``UDP: false`` (exit 0), as ``tailscale netcheck`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import DecodeError, UsageError

if TYPE_CHECKING:
    from toolkit.codec.derpmap import DERPMap

MAX_MAP_BYTES = 1 << 20  # as Tailscale's prodDERPMap reads at most 1 MiB
FETCH_TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "netcheck",
        help="measure UDP, NAT mapping and DERP region latencies (like `tailscale netcheck`)",
        description="Send Tailscale's STUN probes to every region of a DERP map and print the netcheck report.",
    )
    p.add_argument(
        "--derp-map", required=True, metavar="FILE|URL", help="DERP map JSON (tailcfg.DERPMap): a file or http(s) URL"
    )
    p.add_argument("--format", default="text", choices=("text", "json", "json-line"), help="output format")
    p.add_argument("--every", type=float, metavar="SECONDS", help="repeat with incremental reports this often")
    p.add_argument("--verbose", action="store_true", help="trace probes and replies to stderr, show region numbers")
    p.set_defaults(func=run)


def load_derp_map(source: str, *, need_regions: bool = True) -> DERPMap:
    """The DERP map at ``source`` (a path or an http(s) URL) for ``--derp-map``; ``natkit control-server``
    reads its map with this too (``need_regions=False``). Raises UsageError, one line."""
    from toolkit.codec.derpmap import DERPMap

    if source.startswith(("http://", "https://")):
        data = _fetch(source)
    elif "://" in source:
        raise UsageError(f"--derp-map {source!r}: only http:// and https:// URLs (or a file path) are supported")
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"--derp-map {source}: cannot read it: {exc.strerror or exc}") from None
    try:
        derp_map = DERPMap.from_json(data)
    except DecodeError as exc:
        raise UsageError(f"--derp-map {source}: {exc}") from None
    if need_regions and not derp_map.regions:
        raise UsageError(f"--derp-map {source}: the map has no regions: add at least one under 'Regions'")
    return derp_map


def _fetch(url: str) -> bytes:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "natkit-netcheck"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as resp:
            data: bytes = resp.read(MAX_MAP_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise UsageError(f"--derp-map {url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"--derp-map {url}: cannot fetch it: {reason}") from None
    if len(data) > MAX_MAP_BYTES:
        raise UsageError(f"--derp-map {url}: the answer is larger than {MAX_MAP_BYTES} bytes")
    return data


def run(args: argparse.Namespace) -> int:
    import asyncio

    if args.every is not None and args.every <= 0:
        raise UsageError(f"--every {args.every}: give a positive number of seconds")
    derp_map = load_derp_map(args.derp_map)
    return asyncio.run(_main(args, derp_map))


async def _main(args: argparse.Namespace, derp_map: DERPMap) -> int:
    import asyncio

    from toolkit.sansio.trace import TraceRecord
    from toolkit.services.netcheck import NetcheckClient
    from toolkit.services.netcheck_format import format_report

    def trace(record: TraceRecord) -> None:
        print(f"netcheck: {record.summary()}", file=sys.stderr, flush=True)

    async with NetcheckClient(derp_map, tracer=trace if args.verbose else None) as client:
        while True:
            report = await client.get_report()
            sys.stdout.write(format_report(report, derp_map, args.format, verbose=args.verbose))
            sys.stdout.flush()
            if args.every is None:
                return 0
            await asyncio.sleep(args.every)
