"""What a ``natkit node`` keeps between runs, in ``--state-dir`` (default ``/var/lib/natkit/NAME``).

* ``node.key``: the node's WireGuard private key (``privkey:<64 hex>``, mode 0600), made at the first
  start. The node key is its identity (the control server knows it by it), so it survives restarts,
  as ``tailscaled.state`` keeps it. The disco key is not stored: like Tailscale, every start makes a
  fresh one (protocols.md §1.1) and tells control.
* ``endpoints.json``: the node core's endpoint cache (``NodeCore.export_cache()``, last-known
  endpoints per peer), read back with ``import_cache`` at the next start so a restarted node tries
  the addresses that worked before it hears from control (issue 6, "cached endpoints").

Files are written atomically (a temporary file, then ``rename``), so a crash never leaves half a key.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from toolkit.crypto.keys import generate_node_key
from toolkit.errors import UsageError
from toolkit.types import NodePrivateKey

KEY_FILE = "node.key"
CACHE_FILE = "endpoints.json"
DEFAULT_STATE_ROOT = Path("/var/lib/natkit")


def default_state_dir(name: str) -> Path:
    return DEFAULT_STATE_ROOT / name


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load_or_create_key(state_dir: Path) -> tuple[NodePrivateKey, bool]:
    """The node key from ``state_dir/node.key``, made and stored on first use; True if it is new."""
    path = state_dir / KEY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        key = generate_node_key()
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(path, key.text() + "\n")
        except OSError as exc:
            raise UsageError(f"--state-dir {state_dir}: cannot write the node key: {exc.strerror or exc}") from None
        return key, True
    except OSError as exc:
        raise UsageError(f"--state-dir {state_dir}: cannot read {KEY_FILE}: {exc.strerror or exc}") from None
    try:
        return NodePrivateKey.parse(text.strip()), False
    except UsageError:
        raise UsageError(f"{path} does not hold a node key (privkey:<64 hex>): remove it to make a new one") from None


def load_cache(state_dir: Path) -> dict[str, Any] | None:
    """The stored endpoint cache, or None when there is none or it is damaged (it is only a hint)."""
    try:
        obj = json.loads((state_dir / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def save_cache(state_dir: Path, cache: dict[str, Any]) -> bool:
    """Store the endpoint cache; False when the directory cannot be written (the node goes on)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(state_dir / CACHE_FILE, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except (OSError, TypeError, ValueError):
        return False
    return True


__all__ = [
    "CACHE_FILE",
    "DEFAULT_STATE_ROOT",
    "KEY_FILE",
    "default_state_dir",
    "load_cache",
    "load_or_create_key",
    "save_cache",
    "write_atomically",
]
