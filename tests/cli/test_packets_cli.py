"""`natkit sniff` and `natkit decode`: output lines, exit codes, one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import require_root
from toolkit.cli import main
from toolkit.codec import stun
from toolkit.crypto import keys
from toolkit.packets import crafter, pcapio
from toolkit.packets.keyring import Keyring
from toolkit.types import TxID

A_PRIV, A_PUB = keys.disco_key_pair(b"cli-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"cli-b")
TX = TxID(bytes(range(1, 13)))


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "lab.pcap"
    crafter.write_pcap(
        path,
        [
            crafter.udp(crafter.stun_binding_request(TX), "192.168.1.10:41641", "203.0.113.1:3478"),
            crafter.udp(crafter.disco_ping(A_PRIV, B_PUB, txid=TX), "192.168.1.10:41641", "198.51.100.9:41641"),
            crafter.udp(stun.tailnode_request(TX)[:25], "192.168.1.10:41641", "203.0.113.1:3478"),
        ],
    )
    return path


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    Keyring([B_PRIV]).save(path)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_prints_one_line_per_packet_and_the_counts(capsys: pytest.CaptureFixture[str], capture: Path) -> None:
    code, out, err = _run(capsys, "decode", str(capture))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0] == (
        '    1   0.000000  192.168.1.10:41641 -> 203.0.113.1:3478  STUN Binding Request  software="tailnode" fingerprint ok'
    )
    assert "disco from" in lines[1] and "--keys FILE opens it" in lines[1]
    assert "stun malformed (truncated)" in lines[2]
    assert "3 packets: 3 UDP, 0 TCP, 0 other" in err and "malformed: 1 (truncated 1)" in err


def test_decode_with_keys_opens_disco_and_verbose_shows_it(
    capsys: pytest.CaptureFixture[str], capture: Path, keyfile: Path
) -> None:
    code, out, _ = _run(capsys, "decode", str(capture), "--keys", str(keyfile), "-v")
    assert code == 0
    assert f"disco Ping tx=0102.. from {A_PUB.short()} to {B_PUB.short()}" in out
    assert "###[ disco Ping ]###" in out and "###[ STUN ]###" in out
    assert "txid      = 0102030405060708090a0b0c" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decode", "/nonexistent/x.pcap"], "natkit: error: /nonexistent/x.pcap: no such capture file"),
        (["decode", "{tmp}"], "is a directory"),
        (["decode", "{tmp}/notpcap"], "not a pcap or pcapng file"),
        (["decode", "{capture}", "--keys", "{tmp}/missing.json"], "keys file {tmp}/missing.json: no such file"),
        (["decode", "{capture}", "--keys", "{tmp}/bad.json"], "disco_private[0]: not a 32-byte DiscoPrivateKey"),
        (["sniff", "--keys", "{tmp}/bad.json"], "disco_private[0]"),
        (["sniff", "-c", "-1"], "-1 is negative"),
        (["sniff", "--timeout", "soon"], "'soon' is not a number of seconds"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, capture: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "notpcap").write_text("hello")
    (tmp_path / "bad.json").write_text(json.dumps({"version": 1, "disco_private": ["discoprivkey:1234"]}))
    argv = [a.format(tmp=tmp_path, capture=capture) for a in argv]
    try:
        code, out, err = _run(capsys, *argv)
    except SystemExit as exc:  # argparse's own complaints
        code, (out, err) = int(exc.code or 0), capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("natkit: error: ")
    assert message.format(tmp=tmp_path) in err


@pytest.mark.root
def test_sniff_unknown_interface_and_missing_netns(capsys: pytest.CaptureFixture[str]) -> None:
    require_root()
    code, _, err = _run(capsys, "sniff", "-i", "natkit-nope0", "-c", "1")
    assert code == 2 and err.startswith("natkit: error: no network interface 'natkit-nope0'")
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "sniff", "--netns", "natkit-no-such-ns", "-c", "1")
    assert code == 2 and "network namespace 'natkit-no-such-ns' does not exist" in err


@pytest.mark.root
def test_sniff_on_lo_prints_lines_and_writes_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    require_root()
    out_file = tmp_path / "live.pcap"
    stop = threading.Event()

    def traffic() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                s.sendto(stun.tailnode_request(TX), ("127.0.0.1", 9))
                time.sleep(0.05)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        code, out, err = _run(capsys, "sniff", "-i", "lo", "-c", "2", "--timeout", "20", "-w", str(out_file))
    finally:
        stop.set()
        t.join()
    assert code == 0
    lines = [line for line in out.splitlines() if "-> 127.0.0.1:9 " in line]
    assert len(lines) == 2 and all("STUN Binding Request" in line for line in lines)
    assert "packets:" in err
    assert len(list(pcapio.read_records(out_file))) >= 2


def test_help_lists_both_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True).stdout
    assert "sniff" in out and "decode" in out
    result = subprocess.run([sys.executable, "-m", "toolkit", "decode"], capture_output=True, text=True)
    assert result.returncode == 2 and "the following arguments are required: FILE" in result.stderr
