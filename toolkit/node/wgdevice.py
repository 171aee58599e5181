"""The asyncio driver of a WireGuard device: one UDP socket, one TUN fd, one timer, the sans-IO core.

design.md §2: drivers are thin. :class:`WireGuardDriver` reads IP packets from the TUN and hands
them to :meth:`WireGuardDevice.send_packet`, reads UDP datagrams and hands them to
:meth:`~WireGuardDevice.receive_datagram`, and after every input drains what the core produced:
``datagrams_to_send()`` go out over UDP (batched, see below), ``packets_received()`` go to the TUN,
events are looked at only to export keys, and exactly one timer is re-armed from ``get_timer()``.
Every protocol decision (handshakes, rekeying, keepalives, allowed-IPs routing, replay) is the
core's (protocols.md §8).

The UDP socket is dual-stack (an IPv6 socket with ``IPV6_V6ONLY`` off, bound to ``[::]:ListenPort``;
IPv4 peers appear as v4-mapped addresses, which :class:`Endpoint` unmaps); if the namespace has no
IPv6 it falls back to IPv4 only. The UAPI socket (:mod:`toolkit.node.uapi`) lets ``wg`` and
``natkit wg show`` read and change the device while it runs.

Per-packet cost (measured with ``natkit bench tunnel``): each readiness callback drains up to
``_BURST`` packets before the core's output is flushed and the timer re-armed once. The datagrams the
core produced in one go leave in batches with UDP GSO (udp(7): ``sendmsg`` with ``UDP_SEGMENT``, one
syscall per run of equal-size datagrams to one endpoint, the last may be shorter), and the socket sets
``UDP_GRO``, so such a batch arrives in one ``recvmsg`` and is cut back into datagrams here. The kernel
segments for receivers without GRO (wireguard-go), so what is on the wire does not change; if the
kernel refuses GSO, the driver falls back to one ``sendto`` per datagram. Socket addresses and
:class:`Endpoint` objects are converted once per address, not once per packet.

Key export (``keys_out``: a natkit keys file for ``natkit sniff --keys``; ``wireshark_keylog``: Wireshark's
``wg.keylog_file``) is :mod:`toolkit.node.wgkeys`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError
from toolkit.node import udpbatch
from toolkit.node.tun import TunDevice, run_in_netns
from toolkit.node.uapi import SOCKET_DIR, CoreBackend, UapiError, UapiServer, interface_answers
from toolkit.node.wgconfig import WgConfig
from toolkit.node.wgkeys import KeyExport, handshake_secrets, write_atomically
from toolkit.sansio.wireguard import WireGuardDevice
from toolkit.timing import Timing
from toolkit.types import Endpoint

DEFAULT_MTU = 1420  # wg-quick's default: 1500 minus the 80 bytes of IPv6 + UDP + WireGuard overhead
_BURST = 64  # packets handled per wakeup before the loop gets a turn
_CACHE_MAX = 1024  # remembered socket addresses <-> endpoints (a few per peer; cleared when full)


class WireGuardDriver:
    """Runs one WireGuard interface ``name`` from ``config`` (optionally in network namespace ``netns``)."""

    def __init__(
        self,
        config: WgConfig,
        name: str,
        *,
        netns: str | None = None,
        keys_out: Path | None = None,
        wireshark_keylog: Path | None = None,
        uapi_dir: Path = SOCKET_DIR,
        timing: Timing | None = None,
        tracer: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.netns = netns
        self.keys_out = keys_out
        self.wireshark_keylog = wireshark_keylog
        self.uapi_dir = uapi_dir
        self.counters: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.mtu = config.mtu or DEFAULT_MTU
        self.core = WireGuardDevice(
            config.private_key,
            rng=os.urandom,
            epoch=time.time() - time.monotonic(),  # now = time.monotonic(); wall = epoch + now
            timing=timing or Timing(),
            tracer=tracer,
            mtu=self.mtu,
            name=name,
        )
        for peer in config.peers:
            self.core.add_peer(
                peer.public_key,
                preshared_key=peer.preshared_key,
                allowed_ips=[str(n) for n in peer.allowed_ips],
                endpoint=peer.endpoint,
                persistent_keepalive=peer.persistent_keepalive,
            )
        self.tun: TunDevice | None = None
        self.sock: socket.socket | None = None
        self.uapi = UapiServer(
            name,
            CoreBackend(self.core, listen_port=self.listen_port, rebind=self.rebind, on_change=self._flush),
            directory=uapi_dir,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._keys = KeyExport(name, keys_out, wireshark_keylog)
        self._stopped = asyncio.Event()
        # per-packet conversions done once per address: socket address -> Endpoint, Endpoint -> sendto address
        self._endpoints: dict[tuple[Any, ...], Endpoint | None] = {}
        self._addresses: dict[Endpoint, tuple[str, int] | None] = {}
        self._last: tuple[Endpoint | None, tuple[str, int] | None] = (None, None)
        self._gso = True

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open and configure the TUN, bind the socket, serve the UAPI. Undoes itself on failure."""
        self._loop = asyncio.get_running_loop()
        if interface_answers(self.name, self.uapi_dir):
            raise UsageError(f"a WireGuard interface {self.name!r} is already running: `natkit wg down {self.name}`")
        try:
            self.tun = TunDevice.open(self.name, netns=self.netns)
            routes = [n for peer in self.config.peers for n in peer.allowed_ips]
            skipped = self.tun.configure(addresses=self.config.addresses, mtu=self.mtu, routes=routes)
            self.warnings += [
                f"{self.name}: no route added for AllowedIPs {n}: default routes need wg-quick's policy "
                "routing, which natkit does not do; add routes yourself"
                for n in skipped
            ]
            try:
                self._bind(self.config.listen_port or 0)
            except UapiError:
                raise UsageError(
                    f"{self.name}: ListenPort {self.config.listen_port} is already in use: pick another port "
                    "or stop the program that holds it"
                ) from None
            await self.uapi.start()
        except BaseException:
            await self.close()
            raise
        self._loop.add_reader(self.tun.fd, self._on_tun)
        self._flush()  # persistent keepalives and queued handshakes may be due at once

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return (safe from a signal handler)."""
        self._stopped.set()

    async def serve_forever(self) -> None:
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop everything: timer, readers, UAPI socket (file removed), UDP socket, TUN (interface removed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        if self.tun is not None:
            if loop is not None and not self.tun.closed:
                loop.remove_reader(self.tun.fd)
            self.tun.close()
        if self.sock is not None:
            if loop is not None:
                loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        await self.uapi.close()
        self._stopped.set()

    # --- the UDP socket ---------------------------------------------------------------------------

    def listen_port(self) -> int | None:
        return int(self.sock.getsockname()[1]) if self.sock is not None else None

    def _bind(self, port: int) -> None:
        def make() -> socket.socket:
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                address: tuple[str, int] = ("::", port)
            except OSError:  # no IPv6 in this namespace
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                address = ("0.0.0.0", port)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            return sock

        try:
            sock = run_in_netns(self.netns, make)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UapiError(errno.EADDRINUSE, f"UDP port {port} is in use") from None
            raise
        udpbatch.enable_gro(sock)  # a kernel before 5.0 says no: one datagram per recvmsg, as without it
        old, self.sock = self.sock, sock
        self._addresses.clear()  # the family may have changed
        self._last = (None, None)
        self._gso = True  # until the kernel refuses it on this socket
        if self._loop is not None:
            if old is not None:
                self._loop.remove_reader(old.fileno())
            self._loop.add_reader(sock.fileno(), self._on_udp)
        if old is not None:
            old.close()

    def rebind(self, port: int) -> None:
        """Move to UDP ``port`` (``wg set NAME listen-port``); the old socket stays if that fails."""
        self._bind(port)

    def _address_for(self, endpoint: Endpoint) -> tuple[str, int] | None:
        """The ``sendto`` address of ``endpoint`` for this socket (v4-mapped on a dual-stack socket), or
        None if the socket cannot reach it (IPv6 peer, IPv4-only socket). Cached: formatting an
        ``ipaddress`` object costs microseconds, which adds up at tens of thousands of packets a second."""
        if endpoint is self._last[0]:  # the core hands out its peer's Endpoint object: no hashing needed
            return self._last[1]
        try:
            address = self._addresses[endpoint]
            self._last = (endpoint, address)
            return address
        except KeyError:
            pass
        assert self.sock is not None
        address = endpoint.as_tuple()
        if self.sock.family == socket.AF_INET6 and endpoint.ip.version == 4:
            address = (f"::ffff:{endpoint.ip}", endpoint.port)
        elif self.sock.family == socket.AF_INET and endpoint.ip.version == 6:
            address = None
        if len(self._addresses) >= _CACHE_MAX:
            self._addresses.clear()
        self._addresses[endpoint] = address
        return address

    def _endpoint_for(self, address: tuple[Any, ...]) -> Endpoint | None:
        """The :class:`Endpoint` of a ``recvfrom`` address (cached, as :meth:`_address_for`); None if odd."""
        try:
            return self._endpoints[address]
        except KeyError:
            pass
        try:
            endpoint: Endpoint | None = Endpoint(address[0].split("%")[0], address[1])
        except ValueError:
            endpoint = None
        if len(self._endpoints) >= _CACHE_MAX:
            self._endpoints.clear()
        self._endpoints[address] = endpoint
        return endpoint

    def _send_datagrams(self, datagrams: list[tuple[bytes, Endpoint]]) -> None:
        """Send the core's datagrams in order: runs for one endpoint whose datagrams have one size (the
        last may be shorter) go out in one GSO ``sendmsg`` (:mod:`toolkit.node.udpbatch`), the rest one
        ``sendto`` each."""
        runs = udpbatch.gso_runs(datagrams) if self._gso else (([d], len(d), e) for d, e in datagrams)
        for buffers, size, endpoint in runs:
            address = self._address_for(endpoint)
            if address is None:
                self.counters["send-no-ipv6"] += len(buffers)
            elif len(buffers) == 1:
                self._sendto(buffers[0], address)
            else:
                self._send_segments(buffers, size, address)

    def _send_segments(self, buffers: list[bytes], size: int, address: tuple[str, int]) -> None:
        assert self.sock is not None
        try:
            udpbatch.send_segments(self.sock, buffers, size, address)
            self.counters["udp-sent"] += len(buffers)
            self.counters["udp-gso-sends"] += 1
        except OSError as exc:
            if exc.errno not in udpbatch.GSO_UNSUPPORTED:  # a full buffer...: lost datagrams, as with sendto
                self.counters[f"send-error-{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += len(buffers)
                return
            self._gso = False  # e.g. no checksum offload on the way out: one sendto per datagram from now on
            self.counters["udp-gso-refused"] += 1
            for data in buffers:
                self._sendto(data, address)

    def _sendto(self, data: bytes, address: tuple[str, int]) -> None:
        assert self.sock is not None
        try:
            self.sock.sendto(data, address)
            self.counters["udp-sent"] += 1
        except OSError as exc:  # unreachable, full buffer...: a lost datagram, the core retries
            self.counters[f"send-error-{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1

    # --- inputs -----------------------------------------------------------------------------------

    def _on_udp(self) -> None:
        sock = self.sock
        if sock is None:
            return
        handled = 0
        while handled < _BURST:
            try:
                data, ancdata, flags, address = sock.recvmsg(udpbatch.RECV_SIZE, udpbatch.ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP errors surface here (ECONNREFUSED...): nothing to read
                self.counters["udp-recv-error"] += 1
                break
            src = self._endpoint_for(address)
            if src is None or flags & socket.MSG_TRUNC:
                handled += 1
                continue
            now = time.monotonic()
            for datagram in udpbatch.split_gro(data, ancdata):  # several when UDP GRO glued them
                self.core.receive_datagram(datagram, src, now)
                handled += 1
        self._flush()

    def _on_tun(self) -> None:
        tun = self.tun
        if tun is None or tun.closed:
            return
        for _ in range(_BURST):
            packet = tun.read()
            if packet is None:
                break
            self.core.send_packet(packet, time.monotonic())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(time.monotonic())
        self._flush()

    # --- outputs ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Drain the core after an input: datagrams, packets, events; re-arm the one timer."""
        datagrams = self.core.datagrams_to_send()
        if datagrams:
            self._send_datagrams(datagrams)
        tun = self.tun
        for packet in self.core.packets_received():
            if tun is not None and not tun.closed:
                tun.write(packet)
        new_keys = False
        while (event := self.core.next_event()) is not None:
            self.counters[f"event-{type(event).__name__}"] += 1
            new_keys = True
        if new_keys and (self.keys_out is not None or self.wireshark_keylog is not None):
            self._export_keys()
        self._arm_timer()

    def _arm_timer(self) -> None:
        due = self.core.get_timer()
        if self._timer is not None:
            if due is not None and self._timer.when() == due:
                return
            self._timer.cancel()
            self._timer = None
        if due is not None and self._loop is not None:
            # loop.time() is time.monotonic(), the clock the core is fed with
            self._timer = self._loop.call_at(due, self._on_timer)

    # --- key export -------------------------------------------------------------------------------

    def _export_keys(self) -> None:
        self._keys.export(self.core)


__all__ = ["DEFAULT_MTU", "WireGuardDriver", "handshake_secrets", "write_atomically"]
