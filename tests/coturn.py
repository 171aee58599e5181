"""coturn (Debian ``turnserver``) for tests: a real STUN/TURN server started and removed by the test.

``start_coturn(tmp, ips)`` runs coturn on the given IPv4 addresses and a free even port P (and
P + 1, the RFC 5780 alternate port), waits until it answers a STUN Binding request and kills it
afterwards, also when the test fails. With two addresses coturn does RFC 5780 behaviour discovery.
``stun_only=False`` keeps the TURN relay on (``users`` are added as ``user:password`` long-term
credentials in realm ``natkit``). ``netns`` starts it inside a network namespace.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import port_free, require_tool
from toolkit.codec import stun
from toolkit.types import TxID

REALM = "natkit"


@dataclass(frozen=True)
class Coturn:
    ips: tuple[str, ...]
    port: int
    alt_port: int
    log: Path

    @property
    def primary(self) -> tuple[str, int]:
        return (self.ips[0], self.port)


def ports_free(ips: Sequence[str], port: int) -> bool:
    """``port`` and ``port + 1`` free for UDP and TCP on every address."""
    return all(port_free(ip, p) for ip in ips for p in (port, port + 1))


def exchange(
    sock: socket.socket, request: bytes, dst: tuple[str, int], rsock: socket.socket | None = None, tries: int = 3
) -> tuple[bytes, tuple[str, int]]:
    """Send ``request`` from ``sock`` and wait for the reply on ``rsock`` (default: the same socket)."""
    rsock = rsock or sock
    want = stun.decode(request).txid
    for _ in range(tries):
        sock.sendto(request, dst)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            rsock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, src = rsock.recvfrom(4096)
            except TimeoutError:
                break
            if stun.is_stun(data) and stun.decode(data).txid == want:
                return data, src
    raise AssertionError(f"no STUN answer from {dst} after {tries} tries")


_PROBE = """
import socket, sys
from toolkit.codec import stun
from toolkit.types import TxID
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
s.sendto(stun.binding_request(TxID(bytes(12))), (sys.argv[1], int(sys.argv[2])))
s.recvfrom(2048)
"""


def _answers(server: Coturn, netns: str | None) -> bool:
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, sys.executable, "-c", _PROBE, server.ips[0], str(server.port)]
        return subprocess.run(argv, capture_output=True, check=False, timeout=10).returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((server.ips[0], 0))
        try:
            exchange(s, stun.binding_request(TxID(random.randbytes(12))), server.primary, tries=1)
            return True
        except (AssertionError, OSError):
            return False


def _wait_ready(proc: subprocess.Popen[bytes], server: Coturn, netns: str | None, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers(server, netns):
            return True
        time.sleep(0.05)
    return False


def start_coturn(
    tmp: Path,
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    netns: str | None = None,
    stun_only: bool = True,
    users: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> Iterator[Coturn]:
    """Run coturn until the generator is closed (use with ``yield from`` in a fixture or contextlib)."""
    exe = require_tool("turnserver", "coturn")
    rng = random.Random()
    for _attempt in range(4):
        port = rng.randrange(20000, 30000, 2)
        if netns is None and not ports_free(ips, port):
            continue
        log = tmp / f"turnserver-{port}.log"
        args = [exe, "-n", *(f"--listening-ip={ip}" for ip in ips), f"--listening-port={port}"]
        args += [f"--alt-listening-port={port + 1}", "--no-tls", "--no-dtls", "--no-cli"]
        args += ["--log-file=stdout", "--simple-log", "--fingerprint", f"--pidfile={tmp / f'turnserver-{port}.pid'}"]
        args += [f"--userdb={tmp / f'turndb-{port}'}", "--min-port=40000", "--max-port=40999"]
        if stun_only:
            args.append("--stun-only")
        else:
            args += ["--lt-cred-mech", f"--realm={REALM}", *(f"--user={u}" for u in users)]
        args += list(extra)
        prefix = ["ip", "netns", "exec", netns] if netns is not None else []
        with log.open("wb") as out:
            proc = subprocess.Popen([*prefix, *args], stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            server = Coturn(tuple(ips), port, port + 1, log)
            if _wait_ready(proc, server, netns):
                yield server
                return
        finally:
            proc.kill()
            proc.wait(timeout=10)
    pytest.fail(f"coturn did not answer STUN on {list(ips)}; see logs in {tmp}")


__all__ = ["REALM", "Coturn", "exchange", "ports_free", "start_coturn"]
