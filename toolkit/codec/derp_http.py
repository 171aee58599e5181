"""The text parts of a DERP connection: the HTTP upgrade (protocols.md §2.1) and the JSON bodies
sealed inside the ClientInfo and ServerInfo frames (§2.3).

Import these through :mod:`toolkit.codec.derp`. The JSON encoders produce Go's ``encoding/json``
bytes for Tailscale's ``derp.ClientInfo`` and ``derp.ServerInfo`` structs (field order, ``omitempty``,
Go's escaping of ``<``, ``>``, ``&``, U+2028 and U+2029), so the default ClientInfo is exactly
``{"version":2,"CanAckPings":true}``. The JSON decoders follow ``json.Unmarshal``: field names match
case-insensitively (the last match wins), unknown fields are ignored, missing fields and ``null`` are the
zero value (so ``{}`` gives ``version=0``), wrong types are errors. Unlike Go, invalid UTF-8 is an error
rather than replaced, and the top level must be an object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.codec.derp_frames import MAX_INFO_LEN, PROTOCOL_VERSION
from toolkit.errors import BadLengthError, BadValueError, TruncatedError
from toolkit.types import NodePublicKey

MAX_HTTP_HEAD = 8 << 10  # our bound on a request/response head; Go's server allows 1 MiB of headers
PROBE_PATHS = ("/derp/probe", "/derp/latency-check")  # §2.1: answered with an empty 200
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HTTP_VERSION = re.compile(r"HTTP/\d\.\d")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def is_mesh_key(text: str) -> bool:
    """Whether ``text`` is a DERP mesh key: 64 hex digits (Tailscale's ``key.DERPMesh``)."""
    return _HEX64.fullmatch(text) is not None


_INT64 = (-(1 << 63), (1 << 63) - 1)


# --- HTTP upgrade (protocols.md §2.1) ---------------------------------------------------------


def _check_header_text(name: str, value: str) -> None:
    if any(c in value for c in "\r\n\0"):
        raise BadValueError(f"{name} {value!r} contains CR, LF or NUL")


def upgrade_request(
    host: str, *, fast_start: bool = False, ideal_node: str | None = None, path: str = "/derp"
) -> bytes:
    """The client's ``GET /derp`` upgrade request (§2.1), head only (there is no body)."""
    for name, value in (("host", host), ("path", path), ("ideal_node", ideal_node or "")):
        _check_header_text(name, value)
    if not path.startswith("/") or " " in path:
        raise BadValueError(f"path {path!r} must start with / and contain no spaces")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: DERP", "Connection: Upgrade"]
    if fast_start:
        lines.append("Derp-Fast-Start: 1")  # the server then skips its 101 response
    if ideal_node:
        lines.append(f"Ideal-Node: {ideal_node}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A parsed request head. ``headers`` has lowercased names; a repeated header keeps its first value."""

    method: str
    path: str
    headers: dict[str, str]
    http_version: str = "HTTP/1.1"

    @property
    def upgrade(self) -> str:
        return self.headers.get("upgrade", "").lower()

    @property
    def is_derp_upgrade(self) -> bool:
        """``Upgrade: DERP`` (any case). The server answers anything but derp/websocket with 426."""
        return self.upgrade == "derp"

    @property
    def is_websocket_upgrade(self) -> bool:
        return self.upgrade == "websocket"

    @property
    def is_probe(self) -> bool:
        """``/derp/probe`` or ``/derp/latency-check``: answered with an empty 200 (§2.1)."""
        return self.path in PROBE_PATHS

    @property
    def fast_start(self) -> bool:
        return self.headers.get("derp-fast-start") == "1"

    @property
    def ideal_node(self) -> str | None:
        return self.headers.get("ideal-node") or None


@dataclass(frozen=True, slots=True)
class UpgradeResponse:
    """A parsed response head; ``server_key`` and ``version`` come from the Derp-* headers when present."""

    status: int
    reason: str
    headers: dict[str, str]
    server_key: NodePublicKey | None
    version: int | None

    @property
    def is_upgrade(self) -> bool:
        return self.status == 101 and self.headers.get("upgrade", "").lower() == "derp"


def split_http_head(buffer: bytes, max_len: int = MAX_HTTP_HEAD) -> tuple[bytes, bytes] | None:
    """Split ``head (ending in CRLF CRLF) , rest`` off a stream buffer; None if the head is not complete yet.

    Raises BadLengthError once the head is longer than ``max_len`` bytes.
    """
    end = bytes(buffer).find(b"\r\n\r\n", 0, max_len + 4)
    if end < 0:
        if len(buffer) > max_len:
            raise BadLengthError(f"HTTP head longer than {max_len} bytes")
        return None
    if end + 4 > max_len:
        raise BadLengthError(f"HTTP head of {end + 4} bytes is longer than {max_len}")
    return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])


def _split_head(data: bytes) -> tuple[str, dict[str, str]]:
    """First line and headers of one head; CRLF (or bare LF) line ends; the final blank line is optional."""
    data = bytes(data)
    if len(data) > MAX_HTTP_HEAD:
        raise BadLengthError(f"HTTP head of {len(data)} bytes is longer than {MAX_HTTP_HEAD}")
    text = data.decode("latin-1")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise TruncatedError("empty HTTP head")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadValueError(f"bad HTTP header line {line!r}")
        if "\0" in value:
            raise BadValueError(f"NUL in HTTP header {name!r}")
        headers.setdefault(name.lower(), value.strip(" \t"))
    return lines[0], headers


def parse_upgrade_request(data: bytes) -> UpgradeRequest:
    """Parse a request head (as :func:`split_http_head` returns it). Raises DecodeError subclasses."""
    first, headers = _split_head(data)
    parts = first.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _HTTP_VERSION.fullmatch(parts[2]):
        raise BadValueError(f"bad HTTP request line {first!r}")
    if not parts[1].startswith("/"):
        raise BadValueError(f"HTTP request target {parts[1]!r} is not a path")
    return UpgradeRequest(parts[0], parts[1].partition("?")[0], headers, parts[2])


def upgrade_response(server_key: NodePublicKey) -> bytes:
    """The server's 101 answer, byte for byte as derpserver.Handler writes it (§2.1)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: DERP\r\n"
        "Connection: Upgrade\r\n"
        f"Derp-Version: {PROTOCOL_VERSION}\r\n"
        f"Derp-Public-Key: {server_key.hex()}\r\n\r\n"
    ).encode("ascii")


def parse_upgrade_response(data: bytes) -> UpgradeResponse:
    """Parse a response head (101, 426, ...). Raises DecodeError subclasses."""
    first, headers = _split_head(data)
    version, _, rest = first.partition(" ")
    status, _, reason = rest.partition(" ")
    if not _HTTP_VERSION.fullmatch(version) or not re.fullmatch(r"[1-5]\d\d", status):
        raise BadValueError(f"bad HTTP status line {first!r}")
    key_text = headers.get("derp-public-key")
    if key_text is not None and not _HEX64.fullmatch(key_text):
        raise BadValueError(f"Derp-Public-Key {key_text!r} is not 64 hex digits")
    version_text = headers.get("derp-version")
    if version_text is not None and not re.fullmatch(r"\d{1,9}", version_text):
        raise BadValueError(f"Derp-Version {version_text!r} is not a number")
    return UpgradeResponse(
        int(status),
        reason,
        headers,
        NodePublicKey(bytes.fromhex(key_text)) if key_text is not None else None,
        int(version_text) if version_text is not None else None,
    )


def http_response(status: int, reason: str, body: bytes = b"", *, headers: Mapping[str, str] | None = None) -> bytes:
    """A plain HTTP/1.1 response: the empty 200 for probes, ``426 Upgrade Required`` for non-upgrades (§2.1).

    Content-Length is always set; Content-Type defaults to ``text/plain; charset=utf-8`` when there is a body.
    """
    if not 100 <= status <= 599:
        raise BadValueError(f"HTTP status {status} out of range")
    fields = dict(headers or {})
    if body and not any(k.lower() == "content-type" for k in fields):
        fields["Content-Type"] = "text/plain; charset=utf-8"
    fields["Content-Length"] = str(len(body))
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in fields.items():
        if not _TOKEN.fullmatch(name):
            raise BadValueError(f"bad header name {name!r}")
        _check_header_text(name, value)
        lines.append(f"{name}: {value}")
    _check_header_text("reason", reason)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --- JSON bodies of ClientInfo / ServerInfo (protocols.md §2.3) --------------------------------


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's (key, value) pairs in order, as json.loads' object_pairs_hook sees them."""


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(s: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML-safe escapes, UTF-8 kept as is)."""
    out = json.dumps(s, ensure_ascii=False)
    return "".join(_GO_ESCAPES.get(c, c) for c in out)


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise BadValueError(f"{name} must be a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValueError(f"{name} is not valid Unicode (lone surrogate)") from None


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        raise BadValueError(f"{name}={value!r} is not a Go int")


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    """json.Unmarshal's view of an object: keys lowercased (last match wins), nulls dropped."""
    if len(data) > MAX_INFO_LEN:
        raise BadLengthError(f"{what} JSON of {len(data)} bytes is longer than {MAX_INFO_LEN}")

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        pairs = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_Pairs, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(pairs, _Pairs):
        raise BadValueError(f"{what} JSON is not an object")
    return {k.lower(): v for k, v in pairs if v is not None}


def _get(obj: dict[str, Any], what: str, key: str, kind: type[int] | type[str], zero: Any) -> Any:
    value = obj.get(key.lower(), zero)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if _INT64[0] <= value <= _INT64[1]:
            return value
    elif kind is not int and type(value) is kind:
        return value
    raise BadValueError(f"{what} field {key!r}: {value!r} is not a {kind.__name__}")


@dataclass(frozen=True, slots=True)
class ClientInfoJSON:
    """The client's JSON (Tailscale ``derp.ClientInfo``). ``mesh_key``: "" or 64 hex digits (key.DERPMesh)."""

    version: int = PROTOCOL_VERSION
    can_ack_pings: bool = True
    mesh_key: str = ""
    is_prober: bool = False
    app_name: str = ""

    def __post_init__(self) -> None:
        _check_int("version", self.version)
        _check_text("mesh_key", self.mesh_key)
        _check_text("app_name", self.app_name)
        if self.mesh_key and not _HEX64.fullmatch(self.mesh_key):
            raise BadValueError("mesh_key must be 64 hex digits (a key.DERPMesh)")
        if not isinstance(self.can_ack_pings, bool) or not isinstance(self.is_prober, bool):
            raise BadValueError("can_ack_pings and is_prober must be bools")

    def to_json(self) -> bytes:
        """Go's bytes: meshKey (omitzero), version (omitempty), CanAckPings, IsProber and AppName (omitempty)."""
        parts = []
        if self.mesh_key:
            parts.append(f'"meshKey":{_go_string(self.mesh_key)}')
        if self.version:
            parts.append(f'"version":{self.version}')
        parts.append(f'"CanAckPings":{"true" if self.can_ack_pings else "false"}')
        if self.is_prober:
            parts.append('"IsProber":true')
        if self.app_name:
            parts.append(f'"AppName":{_go_string(self.app_name)}')
        return ("{" + ",".join(parts) + "}").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> ClientInfoJSON:
        obj = _load_object(data, "ClientInfo")
        w = "ClientInfo"
        return cls(
            version=_get(obj, w, "version", int, 0),
            can_ack_pings=_get(obj, w, "CanAckPings", bool, False),
            mesh_key=_get(obj, w, "meshKey", str, ""),
            is_prober=_get(obj, w, "IsProber", bool, False),
            app_name=_get(obj, w, "AppName", str, ""),
        )


@dataclass(frozen=True, slots=True)
class ServerInfoJSON:
    """The server's JSON (Tailscale ``derp.ServerInfo``): version and the client's send rate limit."""

    version: int = PROTOCOL_VERSION
    token_bucket_bytes_per_second: int = 0
    token_bucket_bytes_burst: int = 0

    def __post_init__(self) -> None:
        _check_int("version", self.version)
        _check_int("token_bucket_bytes_per_second", self.token_bucket_bytes_per_second)
        _check_int("token_bucket_bytes_burst", self.token_bucket_bytes_burst)

    def to_json(self) -> bytes:
        """Go's bytes: every field omitempty, so the default is ``{"version":2}``."""
        parts = []
        if self.version:
            parts.append(f'"version":{self.version}')
        if self.token_bucket_bytes_per_second:
            parts.append(f'"TokenBucketBytesPerSecond":{self.token_bucket_bytes_per_second}')
        if self.token_bucket_bytes_burst:
            parts.append(f'"TokenBucketBytesBurst":{self.token_bucket_bytes_burst}')
        return ("{" + ",".join(parts) + "}").encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> ServerInfoJSON:
        obj = _load_object(data, "ServerInfo")
        w = "ServerInfo"
        return cls(
            version=_get(obj, w, "version", int, 0),
            token_bucket_bytes_per_second=_get(obj, w, "TokenBucketBytesPerSecond", int, 0),
            token_bucket_bytes_burst=_get(obj, w, "TokenBucketBytesBurst", int, 0),
        )


__all__ = [
    "MAX_HTTP_HEAD",
    "PROBE_PATHS",
    "ClientInfoJSON",
    "ServerInfoJSON",
    "UpgradeRequest",
    "UpgradeResponse",
    "http_response",
    "parse_upgrade_request",
    "parse_upgrade_response",
    "split_http_head",
    "upgrade_request",
    "upgrade_response",
]
