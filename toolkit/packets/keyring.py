"""The keys a capture is read with: disco private keys of the lab's nodes, peers' disco public keys,
names for keys, and WireGuard session keys. Stdlib and ``toolkit.crypto`` only, no scapy.

A disco box (protocols.md §1.1) names its sender in clear but not its receiver. It opens with the
receiver's private key and the sender's public key, or with the sender's private key and the
receiver's public key (the shared key is symmetric). :meth:`Keyring.open_disco` tries both through
the :class:`toolkit.crypto.disco.DiscoKeyring` it keeps with the same keys, and also returns the
plaintext bytes so a sniffer can show a plaintext that opens but does not parse.

Keys file (JSON, UTF-8), format version 1::

    {
      "version": 1,
      "disco_private": ["discoprivkey:<64 hex>", ...],
      "disco_public": ["discokey:<64 hex>", ...],
      "names": {"discokey:<64 hex>": "alice", "nodekey:<64 hex>": "alice"},
      "wireguard": []
    }

* ``version`` is 1; a file without it is read as version 1 (``natkit bench make-pcap`` writes it).
* ``disco_private``: each key as ``discoprivkey:<hex>``, bare 64 hex digits or 44 base64 characters.
* ``disco_public``: peers whose private key is unknown (``discokey:<hex>``, hex or base64).
* ``names`` (optional): labels shown in summaries instead of ``discokey:ab12cd34..``; the key of each
  entry is a ``discokey:`` or ``nodekey:`` public key.
* ``wireguard`` (optional): WireGuard transport session keys, each
  ``{"receiver_index": "0x1a2b3c4d", "key": "<base64>", "label": "a -> b"}``: the key decrypts the
  transport messages sent to that receiver index (:mod:`toolkit.packets.wgopen`). A device writes
  both directions of every session it makes (``natkit wg up --keys-out FILE``).

Any other top-level key is an error, so a typo does not silently open nothing. Every problem is a
:class:`~toolkit.errors.UsageError` naming the file, the entry and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.codec import disco as disco_codec
from toolkit.codec import wireguard as wireguard_codec
from toolkit.crypto.disco import DiscoKeyring
from toolkit.crypto.keys import public_key
from toolkit.crypto.noise import SessionKeys
from toolkit.errors import DecodeError, UsageError
from toolkit.packets.wgopen import OpenedTransport, WireGuardSession, open_transport, sessions_of
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Key32, NodePublicKey

FORMAT_VERSION = 1
_FIELDS = ("version", "disco_private", "disco_public", "names", "wireguard")


@dataclass(frozen=True, slots=True)
class OpenedDisco:
    """A disco box that opened: who sent it to whom, the plaintext, and the parsed message.

    ``message`` is None and ``error`` says why when the plaintext does not parse (protocols.md
    §1.1: a node ignores those, a sniffer shows them).
    """

    sender: DiscoPublicKey
    receiver: DiscoPublicKey
    plaintext: bytes
    message: disco_codec.Message | None
    error: DecodeError | None = None


@dataclass
class Keyring:
    """Disco keys (private and public), key names, and WireGuard session keys."""

    disco_private: list[DiscoPrivateKey] = field(default_factory=list)
    disco_public: list[DiscoPublicKey] = field(default_factory=list)
    names: dict[Key32, str] = field(default_factory=dict)
    wireguard: list[WireGuardSession] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._disco = DiscoKeyring()  # opens the boxes (toolkit.crypto.disco); the lists above are the file's
        self._wg: dict[int, list[WireGuardSession]] = {}
        sessions, self.wireguard = self.wireguard, []
        for s in sessions:
            self.add_wireguard_session(s)
        privs, self.disco_private = self.disco_private, []
        for priv in privs:
            self.add_disco_private(priv)
        pubs, self.disco_public = self.disco_public, []
        for pub in pubs:
            self.add_disco_public(pub)

    # --- building ------------------------------------------------------------------------------

    def add_disco_private(self, priv: DiscoPrivateKey) -> DiscoPublicKey:
        """Hold a node's disco private key; returns its public key."""
        pub = public_key(priv)
        if pub not in self._disco:
            self.disco_private.append(priv)
            self._disco.add(priv)
        return pub

    def add_disco_public(self, pub: DiscoPublicKey) -> None:
        """Know a peer's disco public key (to open what our nodes sealed to it)."""
        if pub not in self.disco_public:
            self.disco_public.append(pub)
            self._disco.add_public(pub)

    def name(self, key: Key32, label: str) -> None:
        self.names[key] = label

    def label(self, key: Key32) -> str:
        """The key's name if it has one, else its short form (``discokey:ab12cd34..``)."""
        return self.names.get(key) or key.short()

    def rename(self, text: str) -> str:
        """``text`` with the short form of every named key replaced by its name."""
        for key, label in self.names.items():
            text = text.replace(key.short(), label)
        return text

    @property
    def has_disco_keys(self) -> bool:
        return bool(self.disco_private)

    def disco_keyring(self) -> DiscoKeyring:
        """The same keys as a :class:`toolkit.crypto.disco.DiscoKeyring` (for code that wants one)."""
        ring = DiscoKeyring(list(self.disco_private))
        for pub in self.disco_public:
            ring.add_public(pub)
        return ring

    # --- opening ---------------------------------------------------------------------------------

    def open_disco(self, data: bytes) -> OpenedDisco | None:
        """Open a disco packet with any of our keys; None when none of them opens it.

        Raises :class:`DecodeError` when ``data`` is not a disco wrapper (protocols.md §1.1).
        """
        opened = self._disco.open_plaintext(data)
        if opened is None:
            return None
        sender, receiver, plaintext = opened
        try:
            return OpenedDisco(sender, receiver, plaintext, disco_codec.decode_message(plaintext))
        except DecodeError as exc:
            return OpenedDisco(sender, receiver, plaintext, None, exc)

    # --- WireGuard ------------------------------------------------------------------------------

    def add_wireguard_session(self, session: WireGuardSession) -> None:
        if session not in self._wg.get(session.receiver_index, []):
            self._wg.setdefault(session.receiver_index, []).append(session)
            self.wireguard.append(session)

    def add_session_keys(self, keys: SessionKeys, label: str = "") -> None:
        """Both directions of a WireGuard session a device derived (toolkit.crypto.noise)."""
        for s in sessions_of(keys, label):
            self.add_wireguard_session(s)

    @property
    def has_wireguard_keys(self) -> bool:
        return bool(self._wg)

    def open_wireguard(self, msg: wireguard_codec.Transport) -> OpenedTransport | None:
        sessions = self._wg.get(msg.receiver_index)
        return open_transport(msg, sessions) if sessions else None

    # --- the file --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "disco_private": [k.text() for k in self.disco_private],
            "disco_public": [k.text() for k in self.disco_public],
        }
        if self.names:
            data["names"] = {k.text(): v for k, v in self.names.items()}
        data["wireguard"] = [s.to_json() for s in self.wireguard]
        return data

    def save(self, path: str | Path) -> None:
        """Write the keys file (private keys in clear: keep it with the lab, not in a repository)."""
        try:
            Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"keys file {path}: cannot write it ({exc.strerror})") from None

    @classmethod
    def load(cls, path: str | Path) -> Keyring:
        """Read a keys file; a :class:`UsageError` says which entry is wrong and how."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"keys file {path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"keys file {path}: is a directory, expected a JSON file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"keys file {path}: cannot read it ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"keys file {path}: not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
        return cls.from_json(data, source=f"keys file {path}")

    @classmethod
    def from_json(cls, data: object, *, source: str = "keys") -> Keyring:
        if not isinstance(data, dict):
            raise UsageError(f"{source}: the top level must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise UsageError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(_FIELDS)})")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise UsageError(f"{source}: version {version!r} is not supported (this natkit reads version 1)")
        ring = cls()
        for i, text in enumerate(_list(data, "disco_private", source)):
            ring.add_disco_private(_key(DiscoPrivateKey, text, f"{source}: disco_private[{i}]"))
        for i, text in enumerate(_list(data, "disco_public", source)):
            ring.add_disco_public(_key(DiscoPublicKey, text, f"{source}: disco_public[{i}]"))
        names = data.get("names", {})
        if not isinstance(names, dict):
            raise UsageError(f"{source}: names must be an object of key -> name, got {type(names).__name__}")
        for key_text, label in names.items():
            where = f"{source}: names[{key_text!r}]"
            if not isinstance(label, str) or not label:
                raise UsageError(f"{where}: the name must be a non-empty string")
            kind = NodePublicKey if key_text.startswith(NodePublicKey.prefix) else DiscoPublicKey
            ring.names[_key(kind, key_text, where)] = label
        for i, entry in enumerate(_list(data, "wireguard", source)):
            ring.add_wireguard_session(WireGuardSession.from_json(entry, f"{source}: wireguard[{i}]"))
        return ring

    def __repr__(self) -> str:
        return (
            f"Keyring({len(self.disco_private)} disco private, {len(self.disco_public)} disco public, "
            f"{len(self.names)} names, {len(self.wireguard)} WireGuard session keys)"
        )


def keys_path_for(pcap: str | Path) -> Path:
    """Where natkit keeps a capture's keys: ``FILE.pcap.keys.json`` beside ``FILE.pcap``."""
    pcap = Path(pcap)
    return pcap.with_name(pcap.name + ".keys.json")


def _list(data: dict[str, Any], name: str, source: str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise UsageError(f"{source}: {name} must be a list, got {type(value).__name__}")
    return value


def _key(kind: type[Key32], text: object, where: str) -> Any:
    if not isinstance(text, str):
        raise UsageError(f"{where}: expected a key string like '{kind.prefix}<64 hex>', got {type(text).__name__}")
    try:
        return kind.parse(text)
    except UsageError as exc:
        if kind.is_private:  # do not echo private key material
            prefix = text.partition(":")[0] + ":" if ":" in text else "no prefix"
            raise UsageError(
                f"{where}: not a 32-byte {kind.__name__} ({prefix}, {len(text)} characters): give "
                f"'{kind.prefix}' + 64 hex digits, bare 64 hex digits or 44 base64 characters"
            ) from None
        raise UsageError(f"{where}: {exc}") from None


def load_keyring(path: str | Path | None) -> Keyring:
    """The keyring of ``path``, or an empty one for None."""
    return Keyring() if path is None else Keyring.load(path)


__all__ = ["FORMAT_VERSION", "Keyring", "OpenedDisco", "load_keyring"]
