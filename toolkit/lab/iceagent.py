"""One ICE agent (aioice, RFC 8445) as a process: the baseline ``natkit bench upgrade`` compares with (issue 6).

Run inside a lab host's namespace::

    ip netns exec NS python -m toolkit.lab.iceagent --stun 198.51.100.10:3478 [--controlling] [--wait-go]

It speaks JSON lines: stdout carries what it says, stdin what the other agent (through
:mod:`toolkit.lab.icebench`, the out-of-band signalling channel) says.

1. ``{"ready": true, ...}`` once Python and aioice are loaded. With ``--wait-go`` it then waits for one
   stdin line (any, conventionally ``{"go": true}``), so that two agents start gathering together
   and interpreter start-up is not measured.
2. ``t_start`` = now (``time.monotonic()``, CLOCK_MONOTONIC: the same clock in every process and
   namespace of the machine); gathering (host candidates + one STUN Binding per IPv4 host
   candidate, RFC 8445 §5.1.1; no TURN). Prints ``{"candidates": [SDP...], "ufrag", "pwd", ...}``.
3. Reads the peer's candidates line, adds its candidates and end-of-candidates (RFC 8838 §8), and
   runs ``connect()`` (connectivity checks §7.2, aggressive nomination by the controlling agent).
4. Exchanges one datagram each way over the selected pair: the controlling agent sends ``ping``
   (repeated every 200 ms until answered), the controlled one answers every ``ping`` with ``pong``
   until its stdin closes or a few seconds pass.
5. Prints one result line and exits 0::

       {"ok": true, "role": "controlling", "t_start": ..., "t_connected": ..., "gather_s": ...,
        "connect_s": ..., "total_s": ..., "exchange_s": ..., "local": {"type", "address"},
        "remote": {"type", "address"}, "checks": N}

   ``gather_s`` = gathering time; ``connect_s`` = ``connect()`` time (from the peer's candidates
   being added); ``total_s`` = from ``t_start`` to ``connect()`` returning (includes the wait for
   the peer's candidates); ``checks`` = connectivity checks this agent started (ordinary and
   triggered, not retransmissions). Any failure: ``{"ok": false, "error": "..."}`` and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from aioice import Candidate, Connection
from aioice.ice import CandidatePair

STDIN_LIMIT = 1 << 20  # bytes: a candidates line is a few hundred
PING_INTERVAL = 0.2  # seconds between the controlling agent's pings until a pong arrives
LINGER = 5.0  # seconds the controlled agent keeps answering pings when stdin stays open


class CountingConnection(Connection):
    """aioice's ``Connection`` counting the connectivity checks it starts (RFC 8445 §7.2.4)."""

    checks = 0

    async def check_start(self, pair: CandidatePair) -> None:
        self.checks += 1
        await super().check_start(pair)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDIN_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_json(reader: asyncio.StreamReader, what: str) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        raise ConnectionError(f"stdin closed while waiting for {what}")
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a JSON object, got {line[:200]!r}")
    return obj


def describe(pair: CandidatePair) -> tuple[dict[str, str], dict[str, str]]:
    local, remote = pair.local_candidate, pair.remote_candidate
    return (
        {"type": local.type, "address": f"{local.host}:{local.port}"},
        {"type": remote.type, "address": f"{remote.host}:{remote.port}"},
    )


async def exchange(conn: Connection, controlling: bool, reader: asyncio.StreamReader, timeout: float) -> None:
    """One datagram each way over the selected pair (step 4 of the module docstring)."""
    if controlling:
        async with asyncio.timeout(timeout):
            while True:
                await conn.send(b"ping")
                try:
                    async with asyncio.timeout(PING_INTERVAL):
                        if await conn.recv() == b"pong":
                            return
                except TimeoutError:
                    continue
    async with asyncio.timeout(timeout):
        while await conn.recv() != b"ping":
            pass
    await conn.send(b"pong")
    eof = asyncio.ensure_future(reader.read())  # the relay closes our stdin once the peer is done

    async def answer() -> None:
        while True:
            if await conn.recv() == b"ping":
                await conn.send(b"pong")

    answering = asyncio.ensure_future(answer())
    try:
        await asyncio.wait([eof, answering], timeout=LINGER, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (eof, answering):
            task.cancel()
        await asyncio.gather(eof, answering, return_exceptions=True)


async def run_agent(stun: tuple[str, int], controlling: bool, wait_go: bool, timeout: float, ipv6: bool) -> int:
    reader = await stdin_reader()
    conn = CountingConnection(ice_controlling=controlling, stun_server=stun, use_ipv6=ipv6)
    role = "controlling" if controlling else "controlled"
    emit({"ready": True, "role": role, "pid": os.getpid()})
    try:
        if wait_go:
            await read_json(reader, "the go line")
        t_start = time.monotonic()
        async with asyncio.timeout(timeout):
            await conn.gather_candidates()
            t_gathered = time.monotonic()
            emit(
                {
                    "candidates": [c.to_sdp() for c in conn.local_candidates],
                    "ufrag": conn.local_username,
                    "pwd": conn.local_password,
                    "t_start": t_start,
                    "gather_s": t_gathered - t_start,
                }
            )
            peer = await read_json(reader, "the peer's candidates")
            conn.remote_username = str(peer["ufrag"])
            conn.remote_password = str(peer["pwd"])
            t_connect = time.monotonic()
            for sdp in peer["candidates"]:
                await conn.add_remote_candidate(Candidate.from_sdp(sdp))
            await conn.add_remote_candidate(None)  # end-of-candidates: failure can now be reported
            await conn.connect()
            t_connected = time.monotonic()
        pair = conn._nominated[1]
        local, remote = describe(pair)
        try:
            await exchange(conn, controlling, reader, timeout)
        except TimeoutError:
            raise ConnectionError(f"connected, but no datagram came back within {timeout} s") from None
        emit(
            {
                "ok": True,
                "role": role,
                "t_start": t_start,
                "t_connected": t_connected,
                "gather_s": t_gathered - t_start,
                "connect_s": t_connected - t_connect,
                "total_s": t_connected - t_start,
                "exchange_s": time.monotonic() - t_connected,
                "local": local,
                "remote": remote,
                "checks": conn.checks,
            }
        )
        return 0
    except TimeoutError:
        emit({"ok": False, "role": role, "error": f"ICE did not complete within {timeout} s", "checks": conn.checks})
        return 1
    except (ConnectionError, ValueError, KeyError, OSError) as exc:
        emit({"ok": False, "role": role, "error": f"{type(exc).__name__}: {exc}", "checks": conn.checks})
        return 1
    finally:
        await conn.close()


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.lab.iceagent", description=__doc__.split("\n")[0])
    parser.add_argument("--stun", type=parse_hostport, required=True, help="STUN server HOST:PORT")
    parser.add_argument("--controlling", action="store_true", help="take the controlling role (RFC 8445 §6.1.1)")
    parser.add_argument("--wait-go", action="store_true", help="wait for one stdin line before gathering")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for gathering + connect (default 30)")
    parser.add_argument("--no-ipv6", action="store_true", help="gather IPv4 host candidates only")
    args = parser.parse_args(argv)
    return asyncio.run(run_agent(args.stun, args.controlling, args.wait_go, args.timeout, not args.no_ipv6))


if __name__ == "__main__":
    sys.exit(main())
