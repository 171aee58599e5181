"""Session key export of a WireGuard driver: a natkit keys file and Wireshark's key log (protocols.md §8).

:class:`KeyExport` is what :class:`~toolkit.node.wgdevice.WireGuardDriver` calls after a handshake derived
new keys (the sans-IO core's ``session_keys()``); each session is exported once.

Key export, for the sniffer and for Wireshark (both optional):

* ``keys_out``: a keys file in the format of :mod:`toolkit.packets.keyring` (version 1) whose
  ``wireguard`` list holds both directions of every session this device made since it started,
  ``{"receiver_index": "0x1a2b3c4d", "key": "<base64>", "label": "NAME nodekey:ab12.. in"}``
  (``in``: packets to this device, which carry its local index and open with its receive key;
  ``out``: packets from it, protocols.md §8.1, §8.3). The file is rewritten atomically (write, then
  rename) whenever a handshake derives new keys, so ``natkit sniff --keys`` can read it any time.
* ``wireshark_keylog``: appended, one block per new session, in the format Wireshark's
  ``wg.keylog_file`` preference reads (:mod:`toolkit.crypto.keylog`): ``LOCAL_STATIC_PRIVATE_KEY =
  <base64>``, ``REMOTE_STATIC_PUBLIC_KEY``, ``LOCAL_EPHEMERAL_PRIVATE_KEY`` and, when one is set,
  ``PRESHARED_KEY`` lines (as wireguard-tools' ``contrib/extract-handshakes`` prints them).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from toolkit.crypto.keylog import HandshakeSecrets, WireGuardSession, append_keylog
from toolkit.sansio.wgevents import SessionKeyRecord
from toolkit.sansio.wireguard import WireGuardDevice
from toolkit.types import NodePrivateKey, NodePublicKey


class KeyExport:
    """Writes ``keys_out`` and/or appends to ``wireshark_keylog`` for device ``name`` (either may be None)."""

    def __init__(self, name: str, keys_out: Path | None, wireshark_keylog: Path | None) -> None:
        self.name = name
        self.keys_out = keys_out
        self.wireshark_keylog = wireshark_keylog
        self._exported: set[int] = set()  # local indices of the sessions already exported
        self._sessions: list[dict[str, object]] = []  # the keys file's "wireguard" list, every session so far

    @property
    def enabled(self) -> bool:
        return self.keys_out is not None or self.wireshark_keylog is not None

    def export(self, core: WireGuardDevice) -> None:
        """Export the sessions of ``core`` not exported yet."""
        records = [r for r in core.session_keys() if r.local_index not in self._exported]
        if not records:
            return
        self._exported.update(r.local_index for r in records)
        if self.keys_out is not None:
            for r in records:
                label = f"{self.name} {r.peer.short()}"
                self._sessions.append(WireGuardSession(r.local_index, r.recv_key, f"{label} in").to_json())
                self._sessions.append(WireGuardSession(r.remote_index, r.send_key, f"{label} out").to_json())
            keyring = {
                "version": 1,
                "disco_private": [],
                "disco_public": [],
                "names": {core.public_key.text(): self.name},
                "wireguard": self._sessions,
            }
            write_atomically(self.keys_out, json.dumps(keyring, indent=2) + "\n")
        if self.wireshark_keylog is not None:
            append_keylog(self.wireshark_keylog, [handshake_secrets(r) for r in records])


def handshake_secrets(record: SessionKeyRecord) -> HandshakeSecrets:
    """The Wireshark key-log entry of one session (toolkit.crypto.keylog formats it)."""
    return HandshakeSecrets(
        local_static_private=NodePrivateKey(record.local_static_private),
        remote_static_public=NodePublicKey(record.remote_static_public),
        local_ephemeral_private=record.local_ephemeral_private,
        preshared_key=record.preshared_key,
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # keys: owner only
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


__all__ = ["KeyExport", "handshake_secrets", "write_atomically"]
