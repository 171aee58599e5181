"""Linux TUN devices: open one (optionally inside a network namespace), configure it with ``ip``.

A TUN device is a network interface whose packets a process reads and writes as whole IP packets
(Linux ``Documentation/networking/tuntap.rst``). natkit opens ``/dev/net/tun`` and attaches it with
the ``TUNSETIFF`` ioctl and ``IFF_TUN | IFF_NO_PI`` (no 4-byte packet-information header: each read
is exactly one IPv4 or IPv6 packet, as WireGuard wants). The device lives as long as the file
descriptor: closing it removes the interface, so a crashed process leaves nothing behind.

Network namespaces (design.md §1, the ``netns`` backend): the kernel creates a TUN device in the
namespace of the thread that *opened* ``/dev/net/tun``, and a socket in the namespace of the thread
that created it. :func:`run_in_netns` runs a function in a short-lived thread that has joined a
namespace with ``setns(2)`` (network namespaces are per thread), so one process can hold TUN fds and
sockets of several namespaces; ``ip -n NAME`` configures the interface from outside. A daemon that
lives in one namespace can instead call :func:`enter_netns` once, before it starts any thread.

Addresses and routes are set with iproute2 (``ip``), the same commands wg-quick(8) runs: MTU, each
``Address`` (IPv6 with ``nodad``: a point-to-point TUN has no neighbours to detect), link up, then one
route per allowed IP. Default routes (``/0``) are not added: wg-quick needs a separate routing table
and a firewall mark for them, which natkit does not implement; :meth:`TunDevice.configure` returns
them so the caller can warn.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from toolkit.errors import NatkitError, UsageError

_T = TypeVar("_T")

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), linux/if_tun.h
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000  # linux/sched.h
NETNS_DIR = Path("/var/run/netns")
MAX_PACKET = 65535


class TunError(NatkitError):
    """A TUN device or an ``ip`` command failed for a reason that is not the user's input."""


def _setns(path: Path) -> None:
    """Join the network namespace at ``path`` (this thread only, or the process if single-threaded)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise TunError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_path(name: str) -> Path:
    """The bind mount ``ip netns add NAME`` creates; :class:`UsageError` if there is none."""
    path = NETNS_DIR / name
    if "/" in name or not path.exists():
        raise UsageError(f"network namespace {name!r} does not exist: create it with `ip netns add {name}`")
    return path


def enter_netns(name: str) -> None:
    """Move the calling process into namespace ``name``. Call it before any thread is started."""
    _setns(netns_path(name))


def run_in_netns(netns: str | None, fn: Callable[[], _T]) -> _T:
    """Run ``fn()`` inside namespace ``netns`` (in a helper thread) and return its result.

    With ``netns=None`` it is just ``fn()``. Sockets and TUN fds made by ``fn`` stay bound to the
    namespace after the helper thread ends.
    """
    if netns is None:
        return fn()
    path = netns_path(netns)
    result: list[_T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _setns(path)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def ip_command(netns: str | None, *args: str) -> str:
    """Run ``ip [-n NETNS] ARGS...``; returns stdout, raises :class:`TunError` with ip's complaint."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except FileNotFoundError:
        raise TunError("`ip` not found: install iproute2") from None
    if done.returncode != 0:
        raise TunError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def link_exists(name: str, netns: str | None = None) -> bool:
    """Whether an interface called ``name`` exists (in ``netns``)."""
    try:
        ip_command(netns, "link", "show", "dev", name)
    except TunError:
        return False
    return True


class TunDevice:
    """An open TUN interface: a non-blocking fd that reads and writes whole IP packets."""

    def __init__(self, name: str, fd: int, netns: str | None = None) -> None:
        self.name = name
        self.fd = fd
        self.netns = netns

    @classmethod
    def open(cls, name: str, *, netns: str | None = None) -> TunDevice:
        """Create TUN interface ``name`` (in ``netns``). :class:`UsageError` if the name is taken."""
        if not 0 < len(name.encode()) < 16:
            raise UsageError(f"interface name {name!r} must have 1 to 15 bytes (IFNAMSIZ)")

        def attach() -> int:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                ifreq = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)  # struct ifreq
                fcntl.ioctl(fd, TUNSETIFF, ifreq)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EBUSY, errno.EEXIST, errno.EINVAL):
                    where = f" in namespace {netns}" if netns else ""
                    raise UsageError(
                        f"interface {name!r} already exists{where}: pick another name or remove it first"
                    ) from None
                if exc.errno == errno.EPERM:
                    raise UsageError("creating a TUN device needs root (CAP_NET_ADMIN): run with sudo") from None
                raise TunError(f"TUNSETIFF {name}: {exc.strerror}") from None
            return fd

        try:
            fd = run_in_netns(netns, attach)
        except FileNotFoundError:
            raise TunError("/dev/net/tun is missing: load the tun module (`modprobe tun`)") from None
        except PermissionError:
            raise UsageError("opening /dev/net/tun needs root (CAP_NET_ADMIN): run with sudo") from None
        os.set_blocking(fd, False)
        return cls(name, fd, netns)

    def configure(
        self,
        *,
        addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = (),
        mtu: int | None = None,
        routes: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Set MTU and addresses, bring the link up, add routes. Returns the routes not added (``/0``)."""
        if mtu is not None:
            ip_command(self.netns, "link", "set", "dev", self.name, "mtu", str(mtu))
        for address in addresses:
            extra = ["nodad"] if address.version == 6 else []
            ip_command(self.netns, f"-{address.version}", "address", "add", str(address), "dev", self.name, *extra)
        ip_command(self.netns, "link", "set", "dev", self.name, "up")
        skipped: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for network in dict.fromkeys(routes):
            if network.prefixlen == 0:
                skipped.append(network)
                continue
            ip_command(self.netns, f"-{network.version}", "route", "replace", str(network), "dev", self.name)
        return skipped

    def read(self) -> bytes | None:
        """One packet, or None when none is waiting."""
        try:
            return os.read(self.fd, MAX_PACKET)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        """Hand one IP packet to the kernel. A full queue drops it, like a busy link would."""
        try:
            os.write(self.fd, packet)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EIO):  # malformed packet / interface down
                raise

    def close(self) -> None:
        """Close the fd; the kernel removes the interface with its addresses and routes."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<TunDevice {self.name} fd={self.fd}{where}>"


__all__ = ["TunDevice", "TunError", "enter_netns", "ip_command", "link_exists", "netns_path", "run_in_netns"]
