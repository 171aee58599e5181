"""`natkit wg up/show/down`: a WireGuard interface run by natkit's own WireGuard, like wg-quick + wg.

``natkit wg up CONFIG [--netns NS] [--foreground] [--keys-out FILE] [--wireshark-keylog FILE]`` reads a
wg-quick file (:mod:`toolkit.node.wgconfig`), creates the TUN interface named after the file's stem
with its addresses, MTU and one route per allowed IP, and runs the device
(:mod:`toolkit.node.wgdevice`). By default it starts the device in a background process (its own
session; pid in ``/var/run/natkit/NAME.pid``, output in ``/var/run/natkit/NAME.log``), waits until the
UAPI socket answers, prints one line and exits 0. ``--foreground`` runs it in this process until
SIGTERM or Ctrl-C.

``natkit wg show [NAME]`` prints what ``wg show`` prints, read over the UAPI socket
(:mod:`toolkit.node.uapi`), so it also shows wireguard-go's interfaces; ``wg show`` shows natkit's.
``natkit wg down NAME`` sends SIGTERM to the process in the pid file and waits until the interface
and its socket are gone.

Errors (bad config with file:line, not root, name in use, unknown namespace) are one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.node.uapi import DeviceInfo
    from toolkit.node.wgconfig import WgConfig

RUN_DIR = Path("/var/run/natkit")
UP_TIMEOUT = 15.0
DOWN_TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wg = sub.add_parser(
        "wg",
        help="bring natkit's WireGuard interfaces up and down, show them (like wg-quick and wg)",
        description="Run WireGuard interfaces with natkit's own WireGuard over a TUN device.",
    )
    wg.set_defaults(func=lambda args: _usage(wg))
    cmds = wg.add_subparsers(title="subcommands", metavar="SUBCOMMAND", parser_class=type(wg))

    up = cmds.add_parser("up", help="create interface NAME from NAME.conf and run it (root)")
    up.add_argument("config", metavar="CONFIG", help="a wg-quick file; the interface is named after its stem")
    up.add_argument("--netns", metavar="NS", help="create the interface and socket in this network namespace")
    up.add_argument("--foreground", action="store_true", help="run in this process until SIGTERM or Ctrl-C")
    up.add_argument("--keys-out", type=Path, metavar="FILE", help="keep the session keys in this keyring (JSON)")
    up.add_argument(
        "--wireshark-keylog", type=Path, metavar="FILE", help="append handshake keys for Wireshark's wg.keylog_file"
    )
    up.set_defaults(func=run_up)

    show = cmds.add_parser("show", help="print interfaces and peers as `wg show` does")
    show.add_argument("name", nargs="?", metavar="NAME", help="one interface (default: all)")
    show.set_defaults(func=run_show)

    down = cmds.add_parser("down", help="stop an interface started by `natkit wg up`")
    down.add_argument("name", metavar="NAME", help="the interface (the config file's stem)")
    down.set_defaults(func=run_down)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# --- up -------------------------------------------------------------------------------------------


def run_up(args: argparse.Namespace) -> int:
    from toolkit.node import uapi
    from toolkit.node.tun import link_exists, netns_path
    from toolkit.node.wgconfig import interface_name, load_config

    name = interface_name(args.config)
    config = load_config(args.config)
    for warning in config.warnings:
        print(f"natkit: warning: {warning}", file=sys.stderr)
    if os.geteuid() != 0:
        raise UsageError("`natkit wg up` needs root (it creates a TUN device): run it with sudo")
    if args.netns:
        netns_path(args.netns)
    if uapi.interface_answers(name):
        raise UsageError(f"a WireGuard interface {name!r} is already running: stop it with `natkit wg down {name}`")
    if link_exists(name, args.netns):
        where = f" in namespace {args.netns}" if args.netns else ""
        raise UsageError(f"an interface {name!r} already exists{where}: remove it or rename the config file")
    if args.foreground:
        return _foreground(args, name, config)
    return _background(args, name)


def _foreground(args: argparse.Namespace, name: str, config: WgConfig) -> int:
    import asyncio

    from toolkit.node.wgdevice import WireGuardDriver

    async def main() -> None:
        driver = WireGuardDriver(
            config,
            name,
            netns=args.netns,
            keys_out=args.keys_out,
            wireshark_keylog=args.wireshark_keylog,
        )
        await driver.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, driver.stop)
        pid_file = RUN_DIR / f"{name}.pid"
        RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            for warning in driver.warnings:
                print(f"natkit: warning: {warning}", file=sys.stderr)
            line = _up_line(name, driver.core.public_key.b64(), driver.listen_port(), len(config.peers), args.netns)
            print(line, flush=True)
            await driver.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                if pid_file.read_text().strip() == str(os.getpid()):
                    pid_file.unlink()

    asyncio.run(main())
    return 0


def _up_line(name: str, public_key: str, port: int | None, peers: int, netns: str | None) -> str:
    where = f" in netns {netns}" if netns else ""
    return f"{name} up{where} (pid {os.getpid()}): public key {public_key}, listening port {port}, {peers} peer(s)"


def _background(args: argparse.Namespace, name: str) -> int:
    from toolkit.node import uapi

    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    log_path = RUN_DIR / f"{name}.log"
    argv = [sys.executable, "-m", "toolkit", "wg", "up", str(Path(args.config).resolve()), "--foreground"]
    if args.netns:
        argv += ["--netns", args.netns]
    if args.keys_out:
        argv += ["--keys-out", str(args.keys_out.resolve())]
    if args.wireshark_keylog:
        argv += ["--wireshark-keylog", str(args.wireshark_keylog.resolve())]
    with log_path.open("w") as log:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith("natkit: error:")]
            reason = lines[-1].removeprefix("natkit: error: ") if lines else f"see {log_path}"
            if child.returncode == 2:
                raise UsageError(reason)
            print(f"natkit: error: {name} did not come up: {reason}", file=sys.stderr)
            return 1
        if uapi.interface_answers(name) and (RUN_DIR / f"{name}.pid").exists():
            up = [ln for ln in log_path.read_text().splitlines() if f"{name} up" in ln]
            print(up[0] if up else f"{name} up (pid {child.pid})")
            return 0
        time.sleep(0.05)
    child.kill()
    child.wait()
    print(f"natkit: error: {name} did not come up within {UP_TIMEOUT:.0f} s; see {log_path}", file=sys.stderr)
    return 1


# --- down -----------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _is_natkit_wg(pid: int, name: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"toolkit" in argv and b"wg" in argv and any(Path(a.decode(errors="replace")).stem == name for a in argv)


def run_down(args: argparse.Namespace) -> int:
    from toolkit.node import uapi

    name = args.name
    uapi.socket_path(name)  # validates the name
    pid_file = RUN_DIR / f"{name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        if uapi.interface_answers(name):
            raise UsageError(
                f"{name!r} runs, but not from `natkit wg up` (no {pid_file}): stop it where it was started"
            ) from None
        raise UsageError(f"no interface {name!r} is up (no {pid_file})") from None
    except ValueError:
        raise UsageError(f"{pid_file} does not hold a process id: delete it") from None
    if not _alive(pid) or not _is_natkit_wg(pid, name):
        pid_file.unlink(missing_ok=True)
        raise UsageError(f"{name!r} was not running (removed the stale {pid_file})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        print(f"natkit: warning: {name} ignored SIGTERM for {DOWN_TIMEOUT:.0f} s; killed it", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            uapi.socket_path(name).unlink()
    pid_file.unlink(missing_ok=True)
    print(f"{name} down")
    return 0


# --- show -----------------------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    from toolkit.node import uapi

    names = [args.name] if args.name else uapi.list_interfaces()
    blocks = [format_show(name, uapi.get_device(name), time.time()) for name in names]
    if blocks:
        print("\n".join(blocks), end="")
    return 0


def format_show(name: str, device: DeviceInfo, now: float) -> str:
    """``wg show NAME`` without colours (wireguard-tools ``show.c``: pretty_print)."""
    lines = [f"interface: {name}"]
    if device.public_key is not None:
        lines.append(f"  public key: {device.public_key.b64()}")
        lines.append("  private key: (hidden)")
    if device.listen_port:
        lines.append(f"  listening port: {device.listen_port}")
    if device.fwmark:
        lines.append(f"  fwmark: 0x{device.fwmark:x}")
    # newest handshake first, peers that never completed one last (show.c: peer_cmp)
    peers = sorted(device.peers, key=lambda p: (p.last_handshake is None, -(p.last_handshake or 0.0)))
    for peer in peers:
        lines += ["", f"peer: {peer.public_key.b64()}"]
        if peer.preshared_key is not None:
            lines.append("  preshared key: (hidden)")
        if peer.endpoint is not None:
            lines.append(f"  endpoint: {peer.endpoint}")
        lines.append(f"  allowed ips: {', '.join(peer.allowed_ips) or '(none)'}")
        if peer.last_handshake:
            lines.append(f"  latest handshake: {_ago(int(peer.last_handshake), int(now))}")
        if peer.rx_bytes or peer.tx_bytes:
            lines.append(f"  transfer: {_bytes(peer.rx_bytes)} received, {_bytes(peer.tx_bytes)} sent")
        if peer.persistent_keepalive:
            lines.append(f"  persistent keepalive: every {_pretty_time(peer.persistent_keepalive)}")
    return "\n".join(lines) + "\n"


def _pretty_time(seconds: int) -> str:
    parts = []
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return ", ".join(parts)


def _ago(then: int, now: int) -> str:
    if then == now:
        return "Now"
    if then > now:
        return "(System clock wound backward; connection problems may ensue.)"
    return f"{_pretty_time(now - then)} ago"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    for unit, power in (("KiB", 1), ("MiB", 2), ("GiB", 3)):
        if count < 1024 ** (power + 1):
            return f"{count / 1024**power:.2f} {unit}"
    return f"{count / 1024**4:.2f} TiB"
