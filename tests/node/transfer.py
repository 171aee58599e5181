"""Helpers of the natkit <-> wireguard-go acceptance tests (tests/node/test_interop_transfer.py).

Three small programs, run inside a namespace with ``ip netns exec NS python -m tests.node.transfer``
(the working directory is the repository, so ``tests`` and ``toolkit`` import), each printing JSON
lines on stdout:

* ``recv --port P``: accepts one TCP connection, hashes everything until EOF, sends the 32-byte
  sha256 back and prints ``{"sha256", "bytes", "seconds"}`` (first connection to EOF).
* ``send --host H --port P --bytes N [--rate B/s]``: sends N deterministic pseudo-random bytes
  (SHAKE-256 of a chunk counter, so nothing is stored), optionally paced to B bytes a second,
  half-closes, waits for the receiver's digest and prints ``{"sha256", "bytes", "seconds",
  "peer_sha256"}`` (connect to digest received).
* ``driver CONFIG --rekey-after-time S [--keys-out F]``: natkit's WireGuard driver on the
  interface named after CONFIG, in the namespace it was started in, with REKEY_AFTER_TIME shortened
  (protocols.md §8.5); prints ``{"up": NAME}`` once the UAPI socket answers, stops on SIGTERM.

Every program stops by itself after ``--timeout`` seconds (default 120) and gives up on a
connection that makes no progress for ``--idle`` seconds, so a stalled tunnel fails a test, never
hangs it. The test side (:class:`Program`, :func:`tcp_transfer`, :func:`natkit_interfaces`,
:func:`configured_wireguard_go`, :func:`tunnel_configs`) kills every process it starts on exit,
also when the test fails.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tests.node import Link, wireguard_go
from tests.support import ROOT
from toolkit.crypto import keys
from toolkit.node.wgconfig import PeerConfig, WgConfig, format_config
from toolkit.types import Endpoint, NodePrivateKey

CHUNK = 64 * 1024
SEED = b"natkit-interop-transfer"
NATKIT_INNER, GO_INNER = "10.77.0.1", "10.77.0.2"  # tunnel addresses: natkit's side, wireguard-go's side


# --- the programs (run inside a namespace) ---------------------------------------------------------


def pattern(size: int) -> Iterator[bytes]:
    """``size`` deterministic pseudo-random bytes in chunks of :data:`CHUNK` (SHAKE-256 in counter mode)."""
    counter = 0
    while size > 0:
        n = min(CHUNK, size)
        yield hashlib.shake_256(SEED + counter.to_bytes(8, "big")).digest(n)
        size -= n
        counter += 1


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _recv(args: argparse.Namespace) -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::", args.port))
        listener.listen(1)
        listener.settimeout(args.timeout)
        _emit(listening=args.port)
        conn, _ = listener.accept()
    deadline = time.monotonic() + args.timeout
    digest, count, start = hashlib.sha256(), 0, time.monotonic()
    with conn:
        conn.settimeout(args.idle)
        while data := conn.recv(1 << 20):
            digest.update(data)
            count += len(data)
            if time.monotonic() > deadline:
                raise TimeoutError(f"still receiving after {args.timeout} s ({count} bytes so far)")
        seconds = time.monotonic() - start
        conn.sendall(digest.digest())
    _emit(sha256=digest.hexdigest(), bytes=count, seconds=seconds)
    return 0


def _send(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    digest, count = hashlib.sha256(), 0
    with socket.create_connection((args.host, args.port), timeout=args.idle) as conn:
        start = time.monotonic()
        for chunk in pattern(args.bytes):
            conn.sendall(chunk)
            digest.update(chunk)
            count += len(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"still sending after {args.timeout} s ({count} bytes so far)")
            if args.rate and (ahead := start + count / args.rate - time.monotonic()) > 0:
                time.sleep(ahead)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < 32 and (data := conn.recv(32 - len(answer))):
            answer += data
        seconds = time.monotonic() - start
    _emit(sha256=digest.hexdigest(), bytes=count, seconds=seconds, peer_sha256=answer.hex())
    return 0


def _driver(args: argparse.Namespace) -> int:
    import asyncio

    from toolkit.node.wgconfig import interface_name, load_config
    from toolkit.node.wgdevice import WireGuardDriver
    from toolkit.timing import Timing

    name, config = interface_name(args.config), load_config(args.config)
    timing = Timing().replace(rekey_after_time=args.rekey_after_time)

    async def main() -> None:
        driver = WireGuardDriver(config, name, keys_out=args.keys_out, timing=timing)
        await driver.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, driver.stop)
        loop.call_later(args.timeout, driver.stop)
        _emit(up=name)
        await driver.serve_forever()

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.node.transfer")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    parser.add_argument("--idle", type=float, default=20.0, help="give up on a connection silent this long")
    cmds = parser.add_subparsers(dest="cmd", required=True)
    recv = cmds.add_parser("recv")
    recv.add_argument("--port", type=int, required=True)
    send = cmds.add_parser("send")
    send.add_argument("--host", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--bytes", type=int, required=True)
    send.add_argument("--rate", type=float, default=0.0, help="bytes a second (0: as fast as TCP goes)")
    drv = cmds.add_parser("driver")
    drv.add_argument("config", type=Path)
    drv.add_argument("--rekey-after-time", type=float, required=True)
    drv.add_argument("--keys-out", type=Path)
    args = parser.parse_args(argv)
    return {"recv": _recv, "send": _send, "driver": _driver}[args.cmd](args)


# --- the test side -----------------------------------------------------------------------------


class Program:
    """One of the programs above running in ``netns``; its JSON lines are read by a thread, so
    :meth:`next_line` can wait with a timeout. :meth:`stop` kills it (SIGTERM, then SIGKILL)."""

    def __init__(self, netns: str, *args: str, timeout: float = 120.0) -> None:
        self.argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.node.transfer"]
        self.argv += ["--timeout", str(timeout), *args]
        self.stderr = tempfile.TemporaryFile()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-2000:]

    def next_line(self, timeout: float) -> dict[str, Any]:
        """The next JSON line; AssertionError (with the program's stderr) on timeout or exit."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.argv[6:]}: no output within {timeout:.0f} s") from None
        if line is None:
            self.proc.wait(5)
            raise AssertionError(f"{self.argv[6:]} exited {self.proc.returncode}: {self.errors()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@contextmanager
def program(netns: str, *args: str, timeout: float = 120.0) -> Iterator[Program]:
    prog = Program(netns, *args, timeout=timeout)
    try:
        yield prog
    finally:
        prog.stop()


@dataclass(frozen=True)
class Transfer:
    """What both ends of one :func:`tcp_transfer` saw."""

    sent_sha256: str
    received_sha256: str
    echoed_sha256: str  # the receiver's digest as the sender got it back over the tunnel
    sent_bytes: int
    received_bytes: int
    seconds: float  # the receiver's: connection accepted to EOF

    @property
    def mib_per_s(self) -> float:
        return self.received_bytes / 2**20 / self.seconds


def tcp_transfer(
    sender_ns: str, receiver_ns: str, host: str, size: int, *, port: int = 5201, rate: float = 0.0, timeout: float
) -> Transfer:
    """Send ``size`` bytes over TCP from ``sender_ns`` to ``host:port`` (a receiver in ``receiver_ns``);
    both programs are killed after ``timeout`` seconds at the latest."""
    with program(receiver_ns, "recv", "--port", str(port), timeout=timeout) as recv:
        assert recv.next_line(10) == {"listening": port}
        send_args = ["send", "--host", host, "--port", str(port), "--bytes", str(size), "--rate", str(rate)]
        with program(sender_ns, *send_args, timeout=timeout) as send:
            sent = send.next_line(timeout + 5)
            got = recv.next_line(10)
    return Transfer(sent["sha256"], got["sha256"], sent["peer_sha256"], sent["bytes"], got["bytes"], got["seconds"])


def natkit(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``natkit ARGS`` in a fresh process, as a user types it."""
    argv = [sys.executable, "-m", "toolkit", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, cwd=ROOT)


class NatkitInterfaces:
    """``natkit wg up`` / ``down`` that remembers what it brought up, for :func:`natkit_interfaces`."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def up(self, config: Path, netns: str, *extra: str) -> None:
        self.names.add(config.name.removesuffix(".conf"))
        done = natkit("wg", "up", str(config), "--netns", netns, *extra)
        assert done.returncode == 0, done.stderr

    def down(self, name: str) -> None:
        done = natkit("wg", "down", name)
        assert done.returncode == 0 and done.stdout == f"{name} down\n", done.stderr

    def close(self) -> None:
        from tests.node import stop_natkit_interface

        for name in self.names:
            stop_natkit_interface(name)


@contextmanager
def natkit_interfaces() -> Iterator[NatkitInterfaces]:
    """Every interface brought up through the yielded object is stopped on exit, also on failure."""
    interfaces = NatkitInterfaces()
    try:
        yield interfaces
    finally:
        interfaces.close()


@contextmanager
def configured_wireguard_go(netns: str, name: str, config: WgConfig, tmp_path: Path) -> Iterator[None]:
    """wireguard-go with ``config`` applied as a user does: ``wg setconf``, then the addresses, link
    up and one route per allowed IP with ``ip`` (what wg-quick does). Killed on exit."""
    with wireguard_go(netns, name):
        path = tmp_path / f"{name}-setconf.conf"
        path.write_text(format_config(config, wg_quick=False))
        subprocess.run(["ip", "netns", "exec", netns, "wg", "setconf", name, str(path)], check=True)
        for address in config.addresses:
            subprocess.run(["ip", "-n", netns, "address", "add", str(address), "dev", name], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", name, "up"], check=True)
        for peer in config.peers:
            for network in peer.allowed_ips:
                route = ["ip", "-n", netns, f"-{network.version}", "route", "replace", str(network), "dev", name]
                subprocess.run(route, check=True)
        yield


Family = Literal[4, 6]


def tunnel_configs(
    link: Link,
    family: Family,
    *,
    natkit_port: int,
    go_port: int,
    natkit_knows_endpoint: bool,
    go_knows_endpoint: bool,
    natkit_keepalive: int | None = None,
    go_keepalive: int | None = None,
) -> tuple[WgConfig, WgConfig]:
    """Configs for natkit (in ``link.a``, tunnel address :data:`NATKIT_INNER`) and wireguard-go (in
    ``link.b``, :data:`GO_INNER`), reaching each other over the veth's IPv4 or IPv6 addresses. A
    side that does not know the other's endpoint can only answer: it learns it from the first
    authenticated packet (roaming, whitepaper §2.1)."""
    natkit_priv, go_priv = keys.generate_node_key(), keys.generate_node_key()
    psk = os.urandom(32)
    a_ip, b_ip = (link.a4, link.b4) if family == 4 else (link.a6, link.b6)

    def side(priv: NodePrivateKey, port: int, inner: str, peer: PeerConfig) -> WgConfig:
        return WgConfig(priv, port, (ipaddress.ip_interface(f"{inner}/24"),), None, (peer,))

    to_go = PeerConfig(
        keys.public_key(go_priv),
        psk,
        (ipaddress.ip_network(f"{GO_INNER}/32"),),
        Endpoint(ipaddress.ip_address(b_ip), go_port) if natkit_knows_endpoint else None,
        natkit_keepalive,
    )
    to_natkit = PeerConfig(
        keys.public_key(natkit_priv),
        psk,
        (ipaddress.ip_network(f"{NATKIT_INNER}/32"),),
        Endpoint(ipaddress.ip_address(a_ip), natkit_port) if go_knows_endpoint else None,
        go_keepalive,
    )
    return side(natkit_priv, natkit_port, NATKIT_INNER, to_go), side(go_priv, go_port, GO_INNER, to_natkit)


def write_config(tmp_path: Path, name: str, config: WgConfig) -> Path:
    path = tmp_path / f"{name}.conf"
    path.write_text(format_config(config))
    return path


__all__ = [
    "GO_INNER",
    "NATKIT_INNER",
    "NatkitInterfaces",
    "Program",
    "Transfer",
    "configured_wireguard_go",
    "main",
    "natkit",
    "natkit_interfaces",
    "pattern",
    "program",
    "tcp_transfer",
    "tunnel_configs",
    "write_config",
]

if __name__ == "__main__":
    sys.exit(main())
