"""The wg-quick configuration format: a parser with line-numbered errors, and a writer.

Follows ``wg(8)`` (CONFIGURATION FILE FORMAT) and ``wg-quick(8)``: an ``[Interface]`` section
(``PrivateKey``, ``ListenPort``, and wg-quick's ``Address`` and ``MTU``) and any number of ``[Peer]``
sections (``PublicKey``, ``PresharedKey``, ``AllowedIPs``, ``Endpoint``, ``PersistentKeepalive``).

Decisions (natkit's, written down here because the man pages leave room):

* Section names and keys are case-insensitive, as in ``wg``; ``#`` starts a comment anywhere on a
  line; blank lines are ignored; ``Address`` and ``AllowedIPs`` may repeat and take comma lists.
* A singular key given twice in one section is an error (``wg`` silently keeps the last one, which
  hides copy-paste mistakes).
* ``Endpoint`` must be a literal address (``1.2.3.4:51820`` or ``[fd00::1]:51820``). Host names are
  rejected: natkit's labs address everything explicitly, and resolving would make a config's
  meaning depend on the resolver of the moment.
* wg-quick-only keys that natkit does not implement (``DNS``, ``Table``, ``PreUp``, ``PostUp``,
  ``PreDown``, ``PostDown``, ``SaveConfig``) and ``FwMark`` are accepted and ignored; each one adds
  a warning to :attr:`WgConfig.warnings` (the CLI prints them), so a stock wg-quick file still works.
  Any other key is an error, so a typo does not silently do nothing.
* ``AllowedIPs`` with host bits set (``10.0.0.1/24``) are masked to the network, as ``wg`` does.
* An ``Address`` without a prefix length gets ``/32`` or ``/128``, as wg-quick does.

Every problem raises :class:`~toolkit.errors.UsageError` with one line:
``FILE:LINE: Field: what is wrong, how to fix it``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# wg-quick(8): the interface name is the config file's stem, 1..15 of these characters (IFNAMSIZ - 1).
_IFNAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
_IGNORED = {
    "dns": "natkit does not configure resolvers",
    "table": "natkit adds routes to the main table only",
    "preup": "natkit runs no hook scripts",
    "postup": "natkit runs no hook scripts",
    "predown": "natkit runs no hook scripts",
    "postdown": "natkit runs no hook scripts",
    "saveconfig": "natkit never rewrites the config file",
    "fwmark": "natkit's sockets set no firewall mark",
}
_INTERFACE_KEYS = {"privatekey": "PrivateKey", "listenport": "ListenPort", "address": "Address", "mtu": "MTU"}
_PEER_KEYS = {
    "publickey": "PublicKey",
    "presharedkey": "PresharedKey",
    "allowedips": "AllowedIPs",
    "endpoint": "Endpoint",
    "persistentkeepalive": "PersistentKeepalive",
}
_REPEATABLE = {"Address", "AllowedIPs"}


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One ``[Peer]`` section. ``line`` is where the section starts (for messages)."""

    public_key: NodePublicKey
    preshared_key: bytes | None = None
    allowed_ips: tuple[IPNetwork, ...] = ()
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None  # seconds; None = off
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class WgConfig:
    """A parsed wg-quick file: the ``[Interface]`` values and the peers, in file order."""

    private_key: NodePrivateKey
    listen_port: int | None = None  # None: pick a free port
    addresses: tuple[IPInterface, ...] = ()
    mtu: int | None = None
    peers: tuple[PeerConfig, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)


def interface_name(path: str | Path) -> str:
    """The interface name wg-quick derives from a config path (``/etc/wireguard/wg0.conf`` -> ``wg0``)."""
    stem = Path(path).name.removesuffix(".conf")
    if not _IFNAME.fullmatch(stem):
        raise UsageError(
            f"{path}: the interface name is the file name without .conf, and {stem!r} is not a valid one: "
            "use 1-15 characters from a-z A-Z 0-9 _ = + . - (for example wg0.conf)"
        )
    return stem


def load_config(path: str | Path) -> WgConfig:
    """Read and parse a wg-quick file. Raises :class:`UsageError` (also when it cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the config: {exc}") from None
    return parse_config(text, filename=str(path))


def parse_config(text: str, *, filename: str = "<config>") -> WgConfig:
    """Parse wg-quick text; ``filename`` prefixes every error and warning."""
    return _Parser(filename).parse(text)


class _Parser:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.warnings: list[str] = []
        self.interface: dict[str, tuple[int, str]] | None = None
        self.interface_line = 0
        self.addresses: list[IPInterface] = []
        self.peers: list[tuple[int, dict[str, tuple[int, str]], list[IPNetwork]]] = []

    def fail(self, line: int, key: str, message: str) -> UsageError:
        where = f"{self.filename}:{line}: {key}: " if key else f"{self.filename}:{line}: "
        return UsageError(where + message)

    def parse(self, text: str) -> WgConfig:
        section: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                section = self._section(number, line)
                continue
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise self.fail(number, "", f"{raw.strip()!r} is not 'Key = Value': write one setting per line")
            if section is None:
                raise self.fail(
                    number, key, "this setting comes before any section: put it under [Interface] or [Peer]"
                )
            self._setting(number, section, key, value)
        return self._build()

    def _section(self, number: int, line: str) -> str:
        name = line.lower()
        if name == "[interface]":
            if self.interface is not None:
                raise self.fail(
                    number,
                    "[Interface]",
                    f"a second [Interface] section (the first is at line {self.interface_line}): merge them",
                )
            self.interface, self.interface_line = {}, number
            return "interface"
        if name == "[peer]":
            self.peers.append((number, {}, []))
            return "peer"
        raise self.fail(number, line, "unknown section: a wg-quick file has only [Interface] and [Peer]")

    def _setting(self, number: int, section: str, key: str, value: str) -> None:
        lowered = key.lower()
        if lowered in _IGNORED and section == "interface":
            self.warnings.append(f"{self.filename}:{number}: {key}: ignored ({_IGNORED[lowered]})")
            return
        known = _INTERFACE_KEYS if section == "interface" else _PEER_KEYS
        canonical = known.get(lowered)
        if canonical is None:
            allowed = ", ".join(known.values())
            raise self.fail(number, key, f"unknown setting in [{section.title()}]: expected one of {allowed}")
        if not value:
            raise self.fail(number, canonical, "has no value: write a value after '=' or delete the line")
        if section == "interface":
            assert self.interface is not None
            values = self.interface
            if canonical == "Address":
                for item in _items(value):
                    self.addresses.append(self._address(number, item))
        else:
            _, values, allowed_ips = self.peers[-1]
            if canonical == "AllowedIPs":
                for item in _items(value):
                    allowed_ips.append(self._network(number, item))
        if canonical in values and canonical not in _REPEATABLE:
            raise self.fail(
                number, canonical, f"given twice in this section (also at line {values[canonical][0]}): keep one"
            )
        values[canonical] = (number, value)

    # --- values ----------------------------------------------------------------------------

    def _address(self, number: int, text: str) -> IPInterface:
        try:
            return ipaddress.ip_interface(text)
        except ValueError:
            raise self.fail(
                number, "Address", f"{text!r} is not an address: write 10.99.0.1/24 or fd00::1/64"
            ) from None

    def _network(self, number: int, text: str) -> IPNetwork:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise self.fail(
                number, "AllowedIPs", f"{text!r} is not a network: write 10.99.0.2/32 or fd00::/64"
            ) from None

    def _key(self, number: int, name: str, text: str, kind: type[NodePrivateKey] | type[NodePublicKey]) -> bytes:
        try:
            return kind.parse(text).raw
        except UsageError:
            hint = "`wg genkey`" if name == "PrivateKey" else "`wg pubkey`" if name == "PublicKey" else "`wg genpsk`"
            raise self.fail(number, name, f"not a 32-byte key: give the 44 base64 characters {hint} prints") from None

    def _int(self, number: int, name: str, text: str, low: int, high: int) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = -1
        if not low <= value <= high:
            raise self.fail(number, name, f"{text!r} is not a whole number in {low}..{high}")
        return value

    def _endpoint(self, number: int, text: str) -> Endpoint:
        try:
            return Endpoint.parse(text)
        except UsageError:
            raise self.fail(
                number,
                "Endpoint",
                f"{text!r} is not IP:port: write 192.0.2.1:51820 or [fd00::1]:51820 (natkit does not resolve host names)",
            ) from None

    # --- assembling ------------------------------------------------------------------------

    def _build(self) -> WgConfig:
        if self.interface is None:
            raise self.fail(1, "[Interface]", "missing: a config needs an [Interface] section with a PrivateKey")
        iface = self.interface
        if "PrivateKey" not in iface:
            raise self.fail(
                self.interface_line, "PrivateKey", "missing in [Interface]: add PrivateKey = <output of `wg genkey`>"
            )
        n, text = iface["PrivateKey"]
        private_key = NodePrivateKey(self._key(n, "PrivateKey", text, NodePrivateKey))
        listen_port = (
            self._int(iface["ListenPort"][0], "ListenPort", iface["ListenPort"][1], 0, 65535)
            if "ListenPort" in iface
            else None
        )
        mtu = self._int(iface["MTU"][0], "MTU", iface["MTU"][1], 576, 65535) if "MTU" in iface else None
        if mtu is not None and mtu < 1280 and any(a.version == 6 for a in self.addresses):
            raise self.fail(
                iface["MTU"][0],
                "MTU",
                f"{mtu} is below 1280, the IPv6 minimum (RFC 8200 §5): raise it or drop the IPv6 Address",
            )
        peers: list[PeerConfig] = []
        seen: dict[NodePublicKey, int] = {}
        for start, values, allowed_ips in self.peers:
            peers.append(self._peer(start, values, allowed_ips, seen))
        return WgConfig(
            private_key=private_key,
            listen_port=listen_port,
            addresses=tuple(self.addresses),
            mtu=mtu,
            peers=tuple(peers),
            warnings=tuple(self.warnings),
        )

    def _peer(
        self,
        start: int,
        values: dict[str, tuple[int, str]],
        allowed_ips: list[IPNetwork],
        seen: dict[NodePublicKey, int],
    ) -> PeerConfig:
        if "PublicKey" not in values:
            raise self.fail(start, "PublicKey", "missing in this [Peer]: add PublicKey = <the peer's `wg pubkey`>")
        n, text = values["PublicKey"]
        public_key = NodePublicKey(self._key(n, "PublicKey", text, NodePublicKey))
        if public_key in seen:
            raise self.fail(
                n,
                "PublicKey",
                f"the same peer is already configured at line {seen[public_key]}: merge the two [Peer] sections",
            )
        seen[public_key] = start
        psk = None
        if "PresharedKey" in values:
            n, text = values["PresharedKey"]
            psk = self._key(n, "PresharedKey", text, NodePublicKey)
        endpoint = self._endpoint(values["Endpoint"][0], values["Endpoint"][1]) if "Endpoint" in values else None
        keepalive = None
        if "PersistentKeepalive" in values:
            n, text = values["PersistentKeepalive"]
            keepalive = None if text.lower() == "off" else self._int(n, "PersistentKeepalive", text, 0, 65535) or None
        unique = tuple(dict.fromkeys(allowed_ips))
        return PeerConfig(public_key, psk, unique, endpoint, keepalive, start)


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def format_config(config: WgConfig, *, wg_quick: bool = True) -> str:
    """Write ``config`` back as text. ``wg_quick=False`` leaves out ``Address`` and ``MTU``: the
    subset ``wg setconf`` accepts (the tests configure wireguard-go with it)."""
    lines = ["[Interface]", f"PrivateKey = {config.private_key.b64()}"]
    if config.listen_port is not None:
        lines.append(f"ListenPort = {config.listen_port}")
    if wg_quick:
        if config.addresses:
            lines.append(f"Address = {', '.join(str(a) for a in config.addresses)}")
        if config.mtu is not None:
            lines.append(f"MTU = {config.mtu}")
    for peer in config.peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key.b64()}"]
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {NodePublicKey(peer.preshared_key).b64()}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(str(n) for n in peer.allowed_ips)}")
        if peer.endpoint is not None:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines) + "\n"


__all__ = [
    "IPInterface",
    "IPNetwork",
    "PeerConfig",
    "WgConfig",
    "format_config",
    "interface_name",
    "load_config",
    "parse_config",
]
