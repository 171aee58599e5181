"""``natkit node --keys-out``'s file without a lab: KeysLog writes JSON lines owner-only, each session
once, and parse_keys reads them back (a torn last line and foreign lines skipped)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from toolkit.crypto.keys import generate_disco_key, generate_node_key, public_key
from toolkit.errors import UsageError
from toolkit.node.nodekeys import KeysLog, NodeSession, parse_keys
from toolkit.sansio.wgevents import SessionKeyRecord


def _record(peer_seed: int, local: int, remote: int) -> SessionKeyRecord:
    peer = public_key(generate_node_key(bytes([peer_seed]) * 32))
    return SessionKeyRecord(peer, local, remote, bytes([1]) * 32, bytes([2]) * 32, 0.0, True, "current",
                            bytes(32), peer.raw, bytes(32), None)  # fmt: skip


def test_node_line_then_each_session_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text("")
    path.chmod(0o644)  # an existing file is made owner-only too
    log = KeysLog(path)
    assert log.open() == f"keys {path}"
    assert parse_keys(path.read_text()) is None  # no node line yet
    node_public = public_key(generate_node_key(b"n" * 32))
    disco = generate_disco_key(b"d" * 32)
    log.node("alice", node_public, disco)
    a, b = _record(3, 0x11, 0x22), _record(3, 0x33, 0x44)
    assert log.sessions([a]) == 1
    assert log.sessions([a, b]) == 1  # a is written once
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [obj["kind"] for obj in lines] == ["node", "session", "session"]
    assert lines[0]["disco_private"] == disco.text() and lines[1]["local_index"] == "0x00000011"
    keys = parse_keys(path.read_text() + '{"kind": "session", "peer": "nodek')  # a torn last line
    assert keys is not None
    assert keys.node_public == node_public and keys.disco_private == disco and keys.disco_public == public_key(disco)
    assert keys.sessions == (NodeSession.of(a), NodeSession.of(b))
    assert keys.sessions[0].send_key == bytes([1]) * 32 and keys.sessions[0].recv_key == bytes([2]) * 32
    assert "\\x01" not in repr(keys) and disco.hex() not in repr(keys)  # no secrets in reprs


def test_a_restart_appends_and_the_last_node_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    node_public = public_key(generate_node_key(b"n" * 32))
    for seed in (b"1", b"2"):
        log = KeysLog(path)
        log.open()
        log.node("alice", node_public, generate_disco_key(seed * 32))
        log.close()
    keys = parse_keys(path.read_text())
    assert keys is not None and keys.disco_private == generate_disco_key(b"2" * 32)
    assert len(path.read_text().splitlines()) == 2


def test_unwritable_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--keys-out .*/missing/keys.jsonl: cannot write there: "):
        KeysLog(tmp_path / "missing" / "keys.jsonl").open()


@pytest.mark.parametrize("where", ["missing/keys.jsonl", "."])
def test_cli_bad_keys_out_is_one_line_exit_2(tmp_path: Path, where: str) -> None:
    argv = [sys.executable, "-m", "toolkit", "node", "--control", "http://127.0.0.1:1", "--authkey", "k",
            "--no-tun", "--state-dir", str(tmp_path / "state"), "--keys-out", str(tmp_path / where)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("natkit: error: --keys-out ") and "cannot write there" in line
    assert not (tmp_path / "state").exists(), "nothing started"


def test_help_says_what_the_file_is_for() -> None:
    out = subprocess.run([sys.executable, "-m", "toolkit", "node", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=30, check=True, env={**os.environ, "COLUMNS": "200"}).stdout  # fmt: skip
    assert "--keys-out FILE" in out and "SSLKEYLOGFILE" in out and "packet inspector" in out
