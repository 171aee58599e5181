"""UDP segmentation offload for the WireGuard driver: many datagrams per syscall (Linux udp(7)).

``sendmsg`` with a ``UDP_SEGMENT`` control message carries a run of equal-size datagrams to one
address (the last may be shorter) and the kernel cuts them into separate datagrams, so what is on
the wire does not change: a receiver without GRO (wireguard-go) sees ordinary datagrams. A socket
with ``UDP_GRO`` set may get several datagrams of one sender glued together in one ``recvmsg``,
their size in a ``UDP_GRO`` control message; :func:`split_gro` cuts them apart again.
Constants from linux/udp.h. Measured effect: see ``natkit bench tunnel`` and the README.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator
from typing import TypeVar

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on older kernels (newer ones allow more)
GSO_MAX_BYTES = 65000  # the payload of one UDP send, below 65535 minus IP and UDP headers
RECV_SIZE = 65536  # a coalesced GRO batch is at most 65535 bytes
ANC_SIZE = socket.CMSG_SPACE(4)  # one int: the UDP_GRO segment size
GSO_UNSUPPORTED = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)

_E = TypeVar("_E")


def gso_runs(datagrams: list[tuple[bytes, _E]]) -> Iterator[tuple[list[bytes], int, _E]]:
    """Group the datagrams, in order, into runs one GSO send can carry: one destination, one size
    (the last of a run may be shorter), at most GSO_MAX_SEGMENTS and GSO_MAX_BYTES. Yields
    ``(buffers, segment_size, destination)``; a run of one is a plain datagram."""
    i, n = 0, len(datagrams)
    while i < n:
        data, dest = datagrams[i]
        size = total = len(data)
        j = i + 1
        while j < n and j - i < GSO_MAX_SEGMENTS:
            following, to = datagrams[j]
            length = len(following)
            if (to is not dest and to != dest) or length > size or total + length > GSO_MAX_BYTES or not length:
                break
            total += length
            j += 1
            if length < size:  # only the last segment may be shorter
                break
        yield [d for d, _ in datagrams[i:j]], size, dest
        i = j


def enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel for GRO batches on ``sock``; False on a kernel before 5.0 (one datagram per recvmsg)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def send_segments(sock: socket.socket, buffers: list[bytes], size: int, address: tuple[str, int]) -> None:
    """One GSO ``sendmsg`` (raises OSError; ``errno in GSO_UNSUPPORTED`` means: fall back to sendto)."""
    sock.sendmsg(buffers, [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, address)


def split_gro(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> list[bytes]:
    """The datagrams in one ``recvmsg`` result: several when the kernel glued a GRO batch."""
    size = 0
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            size = int.from_bytes(value[:4], sys.byteorder)
    if not size or len(data) <= size:
        return [data]
    return [data[start : start + size] for start in range(0, len(data), size)]


__all__ = [
    "ANC_SIZE",
    "RECV_SIZE",
    "enable_gro",
    "gso_runs",
    "send_segments",
    "split_gro",
]
