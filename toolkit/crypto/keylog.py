"""WireGuard key logs in the format Wireshark reads (preference ``wg.keylog_file``).

Each line is ``<key-type> = <base64 key>`` with key types LOCAL_STATIC_PRIVATE_KEY,
REMOTE_STATIC_PUBLIC_KEY, LOCAL_EPHEMERAL_PRIVATE_KEY and PRESHARED_KEY (the format Wireshark's
WireGuard dissector documents in its preference help, ``tshark -G defaultprefs``). With one
side's static private key and the ephemeral private key of a handshake it started, Wireshark
re-derives the session (protocols.md §8.3) and decrypts the handshake and the transport data;
natkit's sniffer reads the same file. A teacher's lab keys only: never log keys of a real network.

:class:`WireGuardSession` is natkit's own export, one entry of a keys file's ``wireguard`` list
(toolkit.packets.keyring): the key that decrypts the transport messages sent to a receiver index.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.types import NodePrivateKey, NodePublicKey

KEY_TYPES = ("LOCAL_STATIC_PRIVATE_KEY", "REMOTE_STATIC_PUBLIC_KEY", "LOCAL_EPHEMERAL_PRIVATE_KEY", "PRESHARED_KEY")


@dataclass(frozen=True, slots=True)
class HandshakeSecrets:
    """What one handshake needs for offline decryption: keys of the side that logs it."""

    local_static_private: NodePrivateKey = field(repr=False)
    remote_static_public: NodePublicKey
    local_ephemeral_private: bytes | None = field(default=None, repr=False)
    preshared_key: bytes | None = field(default=None, repr=False)

    def lines(self) -> list[str]:
        out = [
            f"LOCAL_STATIC_PRIVATE_KEY = {self.local_static_private.b64()}",
            f"REMOTE_STATIC_PUBLIC_KEY = {self.remote_static_public.b64()}",
        ]
        if self.local_ephemeral_private is not None:
            out.append(f"LOCAL_EPHEMERAL_PRIVATE_KEY = {_b64(self.local_ephemeral_private)}")
        if self.preshared_key is not None and any(self.preshared_key):
            out.append(f"PRESHARED_KEY = {_b64(self.preshared_key)}")
        return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def format_keylog(secrets: Iterable[HandshakeSecrets]) -> str:
    return "".join(line + "\n" for s in secrets for line in s.lines())


def append_keylog(path: str | Path, secrets: Iterable[HandshakeSecrets]) -> None:
    """Append to a key log (Wireshark re-reads the file as it grows)."""
    with open(path, "a", encoding="ascii") as fh:
        fh.write(format_keylog(secrets))


def read_keylog(path: str | Path) -> dict[str, list[bytes]]:
    """Parse a key log: key type -> raw 32-byte keys, in file order. Bad lines are a UsageError."""
    out: dict[str, list[bytes]] = {k: [] for k in KEY_TYPES}
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the WireGuard key log ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, sep, value = (part.strip() for part in line.partition("="))
        if not sep or kind not in out:
            raise UsageError(f"{path}:{lineno}: expected '<key-type> = <base64>' with a type of {', '.join(KEY_TYPES)}")
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise UsageError(f"{path}:{lineno}: {kind} is not 32 bytes of base64")
        out[kind].append(raw)
    return out


@dataclass(frozen=True, slots=True)
class WireGuardSession:
    """The key that decrypts transport messages sent to ``receiver_index``."""

    receiver_index: int
    key: bytes = field(repr=False)
    label: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "receiver_index": f"0x{self.receiver_index:08x}",
            "key": base64.b64encode(self.key).decode("ascii"),
        }
        if self.label:
            out["label"] = self.label
        return out

    @classmethod
    def from_json(cls, entry: object, where: str) -> WireGuardSession:
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected an object with receiver_index and key")
        idx, key, label = entry.get("receiver_index"), entry.get("key"), entry.get("label", "")
        try:
            index = int(idx, 0) if isinstance(idx, str) else idx
        except ValueError:
            index = None
        if not isinstance(index, int) or not 0 <= index <= 0xFFFFFFFF:
            raise UsageError(f'{where}: receiver_index must be a 32-bit number such as "0x1a2b3c4d", got {idx!r}')
        raw = b""
        if isinstance(key, str):
            try:
                raw = bytes.fromhex(key) if len(key) == 64 else base64.b64decode(key, validate=True)
            except (ValueError, binascii.Error):
                raw = b""
        if len(raw) != 32:
            raise UsageError(f"{where}: key must be 32 bytes as base64 (44 characters) or 64 hex digits")
        if not isinstance(label, str):
            raise UsageError(f"{where}: label must be a string")
        return cls(index, raw, label)


__all__ = ["KEY_TYPES", "HandshakeSecrets", "WireGuardSession", "append_keylog", "format_keylog", "read_keylog"]
