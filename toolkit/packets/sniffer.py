"""Live capture (optionally inside a network namespace) and offline reading, through one pipeline.

Live capture uses a Linux ``AF_PACKET`` socket of type ``SOCK_DGRAM`` (the kernel strips the link
header and tells the interface, direction and protocol), so any interface works, Ethernet, veth,
loopback or TUN, and captures are written as ``LINKTYPE_LINUX_SLL`` (what ``tcpdump -i any``
writes). Each frame goes through :class:`toolkit.packets.dissect.Analyzer`: fast classification
with the codec's demux, decoding, disco boxes opened with the keyring; scapy only for ``-v``.

Network namespaces (``--netns NAME``, as ``ip netns exec NAME``): the socket is created by a short
helper thread that first joins ``/var/run/netns/NAME`` with ``setns(2)``. A socket belongs to the
namespace it was created in, so the capture thread reads that namespace while the process (and
scapy, imported in the root namespace, design.md §5) stays where it was. The receive buffer is
enlarged (``SO_RCVBUF``, the ``conf.bufsize`` of scapy), or packets are lost above a few thousand
per second (design.md §5).

On ``lo`` every packet passes the tap twice (sent, then received); the sent copy is skipped, as
libpcap does. ``-w FILE`` writes pcap, or pcapng when FILE ends in ``.pcapng``.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.packets import pcapio
from toolkit.packets.dissect import Analyzer, Event, Stats
from toolkit.packets.keyring import Keyring

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>
NETNS_DIR = Path("/var/run/netns")
DEFAULT_BUFSIZE = 8 << 20  # like magicsock's 7 MiB socket buffers (protocols.md §4.1)
SNAPLEN = 262144


# --- sockets -------------------------------------------------------------------------------------


def _setns(name: str) -> None:
    path = NETNS_DIR / name
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _open_socket(iface: str | None, bufsize: int) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise UsageError("live capture needs root (CAP_NET_RAW): run natkit sniff with sudo") from None
    try:
        try:  # root may exceed net.core.rmem_max (SO_RCVBUFFORCE); otherwise the kernel caps SO_RCVBUF
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, bufsize)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        if iface is not None:
            try:
                socket.if_nametoindex(iface)
            except OSError:
                names = ", ".join(name for _, name in socket.if_nameindex())
                raise UsageError(f"no network interface {iface!r} here (there are: {names})") from None
            sock.bind((iface, ETH_P_ALL))
    except BaseException:
        sock.close()
        raise
    return sock


def open_capture_socket(
    iface: str | None = None, netns: str | None = None, bufsize: int = DEFAULT_BUFSIZE
) -> socket.socket:
    """An AF_PACKET socket on ``iface`` (all interfaces if None), in namespace ``netns`` if given."""
    if netns is None:
        return _open_socket(iface, bufsize)
    if "/" in netns or not (NETNS_DIR / netns).exists():
        known = ", ".join(sorted(p.name for p in NETNS_DIR.iterdir())) if NETNS_DIR.is_dir() else "none"
        raise UsageError(f"network namespace {netns!r} does not exist (`ip netns list` shows: {known or 'none'})")
    result: list[socket.socket | BaseException] = []

    def in_namespace() -> None:  # this thread alone joins the namespace, then ends
        try:
            _setns(netns)
            result.append(_open_socket(iface, bufsize))
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=in_namespace, name=f"natkit-netns-{netns}")
    worker.start()
    worker.join()
    got = result[0]
    if isinstance(got, UsageError):
        raise UsageError(f"{got} (in network namespace {netns!r})")
    if isinstance(got, PermissionError):
        raise UsageError(f"entering network namespace {netns!r} needs root: run with sudo") from None
    if isinstance(got, BaseException):
        raise got
    return got


def sll_header(pkttype: int, hatype: int, addr: bytes, proto: int) -> bytes:
    """The 16-byte Linux cooked-capture header (LINKTYPE_LINUX_SLL)."""
    return struct.pack("!HHH8sH", pkttype, hatype, len(addr), addr[:8].ljust(8, b"\0"), proto)


# --- output --------------------------------------------------------------------------------------


class PcapNgWriter:
    """A minimal pcapng writer: one section, one interface, Enhanced Packet Blocks (µs timestamps)."""

    def __init__(self, path: str | Path, linktype: int) -> None:
        try:
            self._fh = open(path, "wb")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write capture ({exc.strerror})") from None
        self._block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))  # Section Header Block
        self._block(1, struct.pack("<HHI", linktype, 0, SNAPLEN))  # Interface Description Block
        self.count = 0

    def _block(self, btype: int, body: bytes) -> None:
        body += bytes(-len(body) % 4)
        size = len(body) + 12
        self._fh.write(struct.pack("<II", btype, size) + body + struct.pack("<I", size))

    def write(self, data: bytes, ts: float = 0.0) -> None:
        usec = round(ts * 1e6)
        self._block(6, struct.pack("<IIIII", 0, usec >> 32, usec & 0xFFFFFFFF, len(data), len(data)) + data)
        self.count += 1

    def close(self) -> None:
        self._fh.close()


def open_writer(path: str | Path, linktype: int) -> pcapio.PcapWriter | PcapNgWriter:
    """pcapng if ``path`` ends in ``.pcapng``, classic pcap otherwise."""
    if str(path).endswith(".pcapng"):
        return PcapNgWriter(path, linktype)
    return pcapio.PcapWriter(path, linktype, SNAPLEN)


# --- the sniffer ---------------------------------------------------------------------------------


class Sniffer:
    """Capture live, analyse every frame, call ``on_event`` for each event; stop on count or timeout.

    ``count`` counts events (the lines natkit prints), ``timeout`` is in seconds; 0/None: no limit.
    Use :meth:`run` (blocking) or :meth:`start` / :meth:`stop` / :meth:`join` (a thread; the socket
    is open when :meth:`start` returns, so packets sent afterwards are captured).
    """

    def __init__(
        self,
        iface: str | None = None,
        *,
        netns: str | None = None,
        keyring: Keyring | None = None,
        write: str | Path | None = None,
        count: int = 0,
        timeout: float | None = None,
        on_event: Callable[[Event], None] | None = None,
        bufsize: int = DEFAULT_BUFSIZE,
    ) -> None:
        self.iface, self.netns, self.count, self.timeout = iface, netns, count, timeout
        self.analyzer = Analyzer(keyring)
        self.on_event = on_event
        self.events: list[Event] = []
        self._write_path, self._bufsize = write, bufsize
        self._sock: socket.socket | None = None
        self._writer: pcapio.PcapWriter | PcapNgWriter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def stats(self) -> Stats:
        return self.analyzer.stats

    @property
    def running(self) -> bool:
        """Whether the capture thread started by :meth:`start` is still capturing."""
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> None:
        self._sock = open_capture_socket(self.iface, self.netns, self._bufsize)
        if self._write_path is not None:
            try:
                self._writer = open_writer(self._write_path, pcapio.LINKTYPE_LINUX_SLL)
            except BaseException:
                self._sock.close()
                raise

    def start(self) -> Sniffer:
        self.open()
        self._thread = threading.Thread(target=self._loop, name="natkit-sniffer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> Stats:
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.stats

    def run(self) -> Stats:
        self.open()
        self._loop()
        if self.error is not None:
            raise self.error
        return self.stats

    def _loop(self) -> None:
        assert self._sock is not None
        sock, deadline = self._sock, (time.monotonic() + self.timeout) if self.timeout else None
        shown = 0
        try:
            while not self._stop.is_set():
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    break
                if not select.select([sock], [], [], wait)[0]:
                    continue
                data, addr = sock.recvfrom(SNAPLEN)
                ts = time.time()
                _ifname, proto, pkttype, hatype, hwaddr = addr
                if pkttype == PACKET_OUTGOING and hatype == ARPHRD_LOOPBACK:
                    continue  # lo: the received copy follows
                frame = sll_header(pkttype, hatype, hwaddr, proto) + data
                if self._writer is not None:
                    self._writer.write(frame, ts)
                for ev in self.analyzer.process(pcapio.Record(ts, pcapio.LINKTYPE_LINUX_SLL, frame)):
                    self.events.append(ev)
                    if self.on_event is not None:
                        self.on_event(ev)
                    shown += 1
                if self.count and shown >= self.count:
                    break
        except BaseException as exc:  # reported by join()/run(), the socket is closed below
            self.error = exc
        finally:
            sock.close()
            if self._writer is not None:
                self._writer.close()


def read_file(path: str | Path, keyring: Keyring | None = None, analyzer: Analyzer | None = None) -> Iterator[Event]:
    """The events of a pcap or pcapng file, through the same pipeline as live capture.

    Pass an ``analyzer`` to read its :attr:`~Analyzer.stats` afterwards.
    """
    analyzer = analyzer if analyzer is not None else Analyzer(keyring)
    try:
        for index, record in enumerate(pcapio.read_records(path), start=1):
            yield from analyzer.process(record, index)
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a .pcap or .pcapng file") from None


__all__ = [
    "DEFAULT_BUFSIZE",
    "PcapNgWriter",
    "Sniffer",
    "open_capture_socket",
    "open_writer",
    "read_file",
    "sll_header",
]
