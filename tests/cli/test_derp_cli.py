"""``natkit derp-server`` as a user runs it: the start line, SIGTERM, bad flags, --key-file, TLS."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import stat
from pathlib import Path

import pytest

from tests.node.transfer import natkit
from tests.services.derpwire import client_tls, connect, self_signed
from tests.support import natkit_service
from toolkit.codec import derp

_START = re.compile(r"natkit derp-server: listening on (.+)$")


def _start(line: str) -> tuple[list[str], str]:
    """The URLs and the key of a start line."""
    match = _START.search(line)
    assert match, line
    *urls, key = match.group(1).split(", ")
    return urls, key


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_start_line_lists_every_listener_and_the_key() -> None:
    with natkit_service("derp-server", "--listen", "127.0.0.1:0", "--listen", "[::1]:0") as server:
        urls, key = _start(server.start_line)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/derp", urls[0]), urls
    assert re.fullmatch(r"http://\[::1\]:\d+/derp", urls[1]), urls
    assert re.fullmatch(r"nodekey:[0-9a-f]{64}", key)


def test_sigterm_sends_restarting_and_exits_0() -> None:
    with natkit_service("derp-server", "--listen", "127.0.0.1:0") as server:
        urls, key = _start(server.start_line)

        async def client_then_stop() -> derp.Frame:
            client = await connect("127.0.0.1", _port(urls[0]))
            assert str(client.server_key) == key
            stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
            frame = await client.frame_of(derp.Restarting)
            assert await client.closed()
            assert await stopping == 0
            return frame

        restarting = asyncio.run(client_then_stop())
    assert restarting == derp.Restarting(1000, 30000)
    assert "natkit derp-server: stopped after" in server.output().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--mesh-key", "abc"], "--mesh-key"),
        (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
        (["--queue-depth", "0"], "--queue-depth"),
        (["--rate", "-1"], "--rate"),
        (["--burst", "100000"], "--burst needs --rate"),
        (["--listen", "localhost:80"], "--listen"),
        (["--rate", "lots"], "--rate"),
    ],
)
def test_bad_flags_are_one_line_exit_2(args: list[str], complaint: str) -> None:
    done = natkit("derp-server", *args)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("natkit: error:") and complaint in lines[0], done.stderr


def test_port_in_use_is_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = natkit("derp-server", "--listen", f"127.0.0.1:{taken.getsockname()[1]}")
    assert done.returncode == 2 and "cannot listen on tcp 127.0.0.1:" in done.stderr, done


def test_key_file_keeps_the_key_across_restarts(tmp_path: Path) -> None:
    key_file = tmp_path / "derper.key"
    keys = []
    for _ in range(2):
        with natkit_service("derp-server", "--listen", "127.0.0.1:0", "--key-file", str(key_file)) as server:
            keys.append(_start(server.start_line)[1])
    assert keys[0] == keys[1]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert re.fullmatch(r"privkey:[0-9a-f]{64}", json.loads(key_file.read_text())["PrivateKey"])
    with natkit_service("derp-server", "--listen", "127.0.0.1:0") as server:
        assert _start(server.start_line)[1] != keys[0]  # without --key-file: a new key every time


def test_unreadable_key_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text('{"PrivateKey": "privkey:nothex"}\n')
    done = natkit("derp-server", "--key-file", str(bad))
    assert done.returncode == 2 and f"--key-file {bad}" in done.stderr, done


def test_tls_flags_serve_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with natkit_service(
        "derp-server", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)
    ) as server:
        urls, _ = _start(server.start_line)
        assert urls[0].startswith("https://127.0.0.1:")

        async def relay() -> derp.Frame:
            a = await connect("127.0.0.1", _port(urls[0]), ssl_context=client_tls(cert))
            b = await connect("127.0.0.1", _port(urls[0]), ssl_context=client_tls(cert))
            a.send_packet(b.pub, b"tls via cli")
            frame = await b.frame_of(derp.RecvPacket)
            a.close()
            b.close()
            return frame

        assert asyncio.run(relay()).packet == b"tls via cli"  # type: ignore[attr-defined]
