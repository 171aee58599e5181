"""``natkit node --keys-out FILE``: the node's keys as JSON lines, for a lab's packet inspector.

Like a browser's ``SSLKEYLOGFILE``: a node that is asked to writes the secrets a sniffer needs to open
what it sends and receives, so a lab's captures decrypt on every backend (``sim`` reads the same keys
from the node core in process). The file is created owner-only (mode 0600) and each line is appended and
flushed as it appears:

* at start, one ``node`` line: the node key (public), the disco key pair of this run (disco boxes open
  with the receiver's private key, protocols.md §1.1)::

    {"kind": "node", "at": 1732500000.1, "name": "alice", "node_public": "nodekey:<hex>",
     "disco_private": "discoprivkey:<hex>", "disco_public": "discokey:<hex>"}

* after each WireGuard handshake, one ``session`` line per new session, written before the node sends
  any packet of it (the handshake response included; protocols.md §8.1: packets to
  this node carry ``local_index`` and open with ``recv_key``; packets from it carry ``remote_index``
  and open with ``send_key``; keys in base64)::

    {"kind": "session", "at": 1732500001.2, "peer": "nodekey:<hex>", "local_index": "0x1a2b3c4d",
     "remote_index": "0x5e6f7a8b", "send_key": "<base64>", "recv_key": "<base64>"}

:func:`parse_keys` reads such a file back into :class:`NodeKeys` (what ``NodeHandle.keys()`` returns);
a node restarted on the same file appends a new ``node`` line, and the last one wins. A torn last line
(the node is writing) and lines of unknown kinds are skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from toolkit.crypto.keys import public_key
from toolkit.errors import UsageError
from toolkit.sansio.wgevents import SessionKeyRecord
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, NodePublicKey


@dataclass(frozen=True, slots=True)
class NodeSession:
    """One WireGuard session of a node with ``peer`` (both directions; see the module docstring)."""

    peer: NodePublicKey
    local_index: int
    remote_index: int
    send_key: bytes
    recv_key: bytes

    def __repr__(self) -> str:  # keys stay out of reprs
        return f"NodeSession({self.peer.short()}, local 0x{self.local_index:08x}, remote 0x{self.remote_index:08x})"

    @classmethod
    def of(cls, record: SessionKeyRecord) -> NodeSession:
        """The exported part of a core's session record (``NodeCore.session_keys()``)."""
        return cls(record.peer, record.local_index, record.remote_index, record.send_key, record.recv_key)


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """A node's keys: what a sniffer needs to name its packets and open its disco boxes and WireGuard."""

    node_public: NodePublicKey
    disco_private: DiscoPrivateKey
    disco_public: DiscoPublicKey
    sessions: tuple[NodeSession, ...] = ()

    def __repr__(self) -> str:
        return f"NodeKeys({self.node_public.short()}, {self.disco_public.short()}, {len(self.sessions)} sessions)"


class KeysLog:
    """Appends a node's keys to ``path`` (module docstring); each session once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._written: set[tuple[int, int]] = set()  # (local_index, remote_index) of the sessions written

    def open(self) -> str:
        """Create or append to the file, owner-only; a :class:`UsageError` if it cannot be written."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)  # an existing file too: it holds secrets
            self._file = os.fdopen(fd, "a", encoding="ascii")
        except OSError as exc:
            raise UsageError(f"--keys-out {self.path}: cannot write there: {exc.strerror or exc}") from None
        return f"keys {self.path}"

    def node(self, name: str, node_public: NodePublicKey, disco_private: DiscoPrivateKey) -> None:
        self._write({"kind": "node", "at": round(time.time(), 6), "name": name, "node_public": node_public.text(),
                     "disco_private": disco_private.text(), "disco_public": public_key(disco_private).text()})  # fmt: skip

    def sessions(self, records: Iterable[SessionKeyRecord]) -> int:
        """Write the sessions of ``records`` not written yet; how many were new."""
        new = 0
        for r in records:
            ids = (r.local_index, r.remote_index)
            if ids in self._written:
                continue
            self._written.add(ids)
            new += 1
            self._write({"kind": "session", "at": round(time.time(), 6), "peer": r.peer.text(),
                         "local_index": f"0x{r.local_index:08x}", "remote_index": f"0x{r.remote_index:08x}",
                         "send_key": _b64(r.send_key), "recv_key": _b64(r.recv_key)})  # fmt: skip
        return new

    def _write(self, obj: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(obj) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_keys(text: str) -> NodeKeys | None:
    """The keys of a keys file's text (the last ``node`` line, every ``session``); None before the node line."""
    node: NodeKeys | None = None
    sessions: dict[tuple[int, int], NodeSession] = {}
    for line in text.splitlines():
        try:
            obj = json.loads(line)
            if obj.get("kind") == "node":
                priv = DiscoPrivateKey.parse(obj["disco_private"])
                node = NodeKeys(NodePublicKey.parse(obj["node_public"]), priv, public_key(priv))
            elif obj.get("kind") == "session":
                s = NodeSession(
                    NodePublicKey.parse(obj["peer"]),
                    int(obj["local_index"], 16),
                    int(obj["remote_index"], 16),
                    base64.b64decode(obj["send_key"], validate=True),
                    base64.b64decode(obj["recv_key"], validate=True),
                )
                sessions[(s.local_index, s.remote_index)] = s
        except (ValueError, KeyError, TypeError, AttributeError, UsageError, binascii.Error):
            continue  # a torn last line, or not ours
    if node is None:
        return None
    return NodeKeys(node.node_public, node.disco_private, node.disco_public, tuple(sessions.values()))


__all__ = ["KeysLog", "NodeKeys", "NodeSession", "parse_keys"]
