"""Live capture on an interface inside a lab namespace: an ``AF_PACKET`` socket read by a thread.

A socket belongs to the network namespace it was created in, so a short helper thread joins the
namespace (``setns(2)``, :func:`toolkit.node.tun.run_in_netns`) just to create it; the reading thread
then stays in the caller's namespace (as toolkit/packets/sniffer.py does; toolkit.lab may not import
toolkit.packets, so this is the small reader the lab needs). ``SOCK_DGRAM`` makes the kernel strip
the link-layer header (packet(7)): each read is one IP packet, what a LINKTYPE_RAW pcap holds. Only
IPv4 and IPv6 frames are kept (no ARP). The receive buffer is enlarged (``SO_RCVBUFFORCE``) or bursts
are lost (design.md §5).
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

from toolkit.errors import UsageError
from toolkit.lab.backend import Capture
from toolkit.node.tun import run_in_netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>
BUFSIZE = 8 << 20
MAX_FRAME = 65535


def open_packet_socket(netns: str, interface: str, bufsize: int = BUFSIZE) -> socket.socket:
    """An ``AF_PACKET``/``SOCK_DGRAM`` socket bound to ``interface`` in namespace ``netns``."""

    def make() -> socket.socket:
        try:
            socket.if_nametoindex(interface)
        except OSError:
            names = ", ".join(n for _, n in socket.if_nameindex())
            raise UsageError(f"no interface {interface!r} in namespace {netns} (there are: {names})") from None
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, bufsize)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            sock.bind((interface, ETH_P_ALL))
        except BaseException:
            sock.close()
            raise
        return sock

    try:
        return run_in_netns(netns, make)
    except PermissionError:
        raise UsageError("capturing in a lab namespace needs root (CAP_NET_RAW, CAP_SYS_ADMIN)") from None


class NetnsCapture(Capture):
    """A :class:`~toolkit.lab.backend.Capture` fed by a reader thread; :meth:`aclose` stops it."""

    def __init__(self, element: str, interface: str, netns: str) -> None:
        super().__init__(element, interface)
        self.netns = netns
        self._sock = open_packet_socket(netns, interface)  # open before returning: nothing sent later is missed
        self._stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read, name=f"capture-{netns}-{interface}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([sock], [], [], 0.1)
                if not ready:
                    continue
                try:
                    data, addr = sock.recvfrom(MAX_FRAME)
                except OSError:
                    break
                proto, pkttype, hatype = addr[1], addr[2], addr[3]
                if proto not in (ETH_P_IP, ETH_P_IPV6):
                    continue
                if hatype == ARPHRD_LOOPBACK and pkttype == PACKET_OUTGOING:
                    continue  # on lo every packet passes twice (libpcap skips the sent copy too)
                self._post(time.time(), data)
        finally:
            sock.close()

    def _post(self, ts: float, data: bytes) -> None:
        try:
            self._loop.call_soon_threadsafe(self.feed, ts, data)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stop.set()

    def stop(self) -> None:
        """Stop reading (blocking for at most one select timeout); idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(1.0)
        self.close()

    async def aclose(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 1.0)
        # let feeds already queued on the loop run before the capture is marked closed
        await asyncio.sleep(0)
        await super().aclose()


__all__ = ["NetnsCapture", "open_packet_socket"]
