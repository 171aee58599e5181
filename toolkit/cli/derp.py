"""``natkit derp-server``: run a DERP relay (Tailscale DERP protocol v2, protocols.md §2).

::

    natkit derp-server [--listen HOST:PORT ...] [--key-file FILE] [--tls-cert FILE --tls-key FILE]
                       [--mesh-key HEX64] [--rate BYTES_PER_S] [--burst BYTES] [--queue-depth N]

The default listener is ``0.0.0.0:3340`` (``derper -dev``'s port). ``--key-file`` keeps the server's
private key across restarts in derper's config format (``{"PrivateKey": "privkey:<hex>"}``, a file
created with mode 0600 and a fresh key when missing); without it the key is new at every start. The
start line lists the URL of every listener (``https://`` with TLS) and the server's public key::

    natkit derp-server: listening on http://0.0.0.0:3340/derp, nodekey:7a1b...

SIGTERM or Ctrl-C sends Restarting to every client, closes everything and exits 0. Bad flags, an
unreadable key file or certificate and an address that cannot be bound are one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import UsageError

if TYPE_CHECKING:
    import ssl

    from toolkit.types import NodePrivateKey

DEFAULT_LISTEN = "0.0.0.0:3340"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "derp-server",
        help="run a DERP relay (Tailscale's packet relay, HTTP upgrade, TLS optional)",
        description="Run a DERP relay speaking Tailscale's DERP protocol v2 over HTTP or HTTPS.",
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help=f"TCP address to serve on, repeatable (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--key-file", type=Path, metavar="FILE", help="keep the private key here (created 0600 if missing)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate (chain): serve HTTPS")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument("--mesh-key", metavar="HEX64", default="", help="clients with this key may watch and forward")
    p.add_argument("--rate", type=int, default=0, metavar="BYTES_PER_S", help="per-client send limit (0: none)")
    p.add_argument("--burst", type=int, default=0, metavar="BYTES", help="per-client burst (at least 64 KiB + 32)")
    p.add_argument("--queue-depth", type=int, default=None, metavar="N", help="packets held per stalled client (32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toolkit.codec.derp_http import is_mesh_key
    from toolkit.services.derpserver import DerpLimits, DerpServer
    from toolkit.services.runner import parse_listen, run_service

    listen = parse_listen(args.listen, DEFAULT_LISTEN)
    mesh_key = args.mesh_key.strip()
    if mesh_key and not is_mesh_key(mesh_key):
        raise UsageError(f"--mesh-key {args.mesh_key!r} must be 64 hex digits, e.g. from `openssl rand -hex 32`")
    if args.rate < 0 or args.burst < 0:
        raise UsageError("--rate and --burst must be >= 0 (0 means no limit)")
    if args.burst and not args.rate:
        raise UsageError("--burst needs --rate: give the per-client rate in bytes/s as well")
    if args.queue_depth is not None and args.queue_depth < 1:
        raise UsageError(f"--queue-depth must be >= 1, got {args.queue_depth}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both for HTTPS, neither for HTTP")
    ssl_context = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
    private_key = load_or_create_key(args.key_file) if args.key_file is not None else _fresh_key()
    limits = DerpLimits(queue_depth=args.queue_depth, rate_bytes_per_s=args.rate, burst_bytes=args.burst)
    server = DerpServer(private_key, listen, ssl_context=ssl_context, mesh_key=mesh_key, limits=limits)
    return run_service(server)


def _fresh_key() -> NodePrivateKey:
    from toolkit.crypto.keys import generate_node_key

    return generate_node_key()


def load_or_create_key(path: Path) -> NodePrivateKey:
    """The key in ``path`` (derper's JSON, or a bare ``privkey:<hex>`` line); a new one saved 0600 if missing."""
    from toolkit.types import NodePrivateKey

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        key = _fresh_key()
        data = json.dumps({"PrivateKey": key.text()}, indent="\t") + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
        except OSError as exc:
            raise UsageError(f"--key-file {path}: cannot create it: {exc.strerror or exc}") from None
        return key
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--key-file {path}: cannot read it: {exc}") from None
    value = text.strip()
    if value.startswith("{"):
        try:
            value = json.loads(value)["PrivateKey"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f'--key-file {path}: not {{"PrivateKey": "privkey:<hex>"}} JSON') from None
    if not isinstance(value, str):
        raise UsageError(f"--key-file {path}: PrivateKey must be a string")
    try:
        return NodePrivateKey.parse(value)
    except UsageError as exc:
        raise UsageError(f"--key-file {path}: {exc}") from None


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise UsageError(f"--tls-cert/--tls-key: {exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"--tls-cert {cert} / --tls-key {key}: cannot load them: {exc}") from None
    return context
