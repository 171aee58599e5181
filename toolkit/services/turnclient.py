"""A small TURN client over UDP (RFC 8656): one allocation, permissions, channels, ChannelData.

What it does, in order (RFC 8656 §7-§12):

1. ``await allocate()``: an Allocate request with REQUESTED-TRANSPORT UDP (§7.1); the server answers
   401 with REALM and NONCE, and the client retries with USERNAME, REALM, NONCE and
   MESSAGE-INTEGRITY keyed with the long-term key MD5(username:realm:password) (RFC 8489 §9.2).
   A 438 (Stale Nonce) is retried once with the new NONCE (RFC 8489 §9.2.5). The answer carries
   XOR-RELAYED-ADDRESS (:attr:`relayed`), XOR-MAPPED-ADDRESS (:attr:`mapped`) and LIFETIME.
2. ``await create_permission(peer)`` (§9) and ``await bind_channel(peer)`` (§12.1: a channel
   number in 0x4000-0x4FFF; binding also installs the permission).
3. ``await send(peer, data)``: a ChannelData message (§12.4: channel number, length, data; no
   padding over UDP) when a channel is bound to ``peer``, else a Send indication (§11.1).
   ``await recv()`` gives ``(peer, data)`` from ChannelData or Data indications (§11.4, §12.6).
4. ``await close()``: a Refresh with LIFETIME 0 deletes the allocation (§8), then the socket closes.

Requests are retransmitted as RFC 8489 §6.2.1 says (``timing.stun_rto`` doubling, ``stun_rc``
sends, the last waited ``stun_rm`` times the RTO). Anything the client does not expect (a datagram
from elsewhere, a channel it did not bind, bytes that do not decode) is dropped and counted in
:attr:`dropped` by reason, never raised.

Every message is the STUN codec's: TURN's attributes and ChannelData are in
:mod:`toolkit.codec.stun_attrs_turn` (re-exported by :mod:`toolkit.codec.stun`).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter

from toolkit.codec import stun
from toolkit.codec.stun import CHANNEL_MAX, CHANNEL_MIN, ChannelData, Class, Message, Method
from toolkit.errors import DecodeError, NatkitError
from toolkit.services.sockets import endpoint_of
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, TxID

QUEUE_DEPTH = 4096  # received packets waiting for recv(); more are dropped ("queue-full")


class TurnError(NatkitError):
    """A TURN request failed: an error response (``code`` > 0) or no answer (``code`` 0)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


# --- the client ------------------------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: TurnClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.client._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.client.dropped["socket-error"] += 1


class TurnClient:
    """One UDP allocation on a TURN server (see the module docstring for the flow)."""

    def __init__(
        self,
        server: Endpoint,
        username: str,
        password: str,
        *,
        timing: Timing = DEFAULT,
        software: str | None = "natkit",
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.timing = timing
        self.software = software
        self.relayed: Endpoint | None = None
        self.mapped: Endpoint | None = None
        self.lifetime = 0
        self.realm: str | None = None
        self.sent = 0
        self.received = 0
        self.received_by: Counter[str] = Counter()  # "channel-data" / "data-indication"
        self.dropped: Counter[str] = Counter()
        self._server_addr = server.as_tuple()
        self._nonce: str | None = None
        self._key: bytes | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._channels: dict[Endpoint, int] = {}  # peer -> channel number
        self._peers: dict[int, Endpoint] = {}  # channel number -> peer
        self._queue: asyncio.Queue[tuple[Endpoint, bytes]] = asyncio.Queue(QUEUE_DEPTH)

    # -- socket -----------------------------------------------------------------------------------

    async def _open(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            family = socket.AF_INET6 if self.server.is_ipv6 else socket.AF_INET
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=("::" if self.server.is_ipv6 else "0.0.0.0", 0), family=family
            )
            self._transport = transport
        return self._transport

    @property
    def local(self) -> Endpoint | None:
        """The client's own socket address (None before :meth:`allocate`)."""
        if self._transport is None:
            return None
        return endpoint_of(self._transport.get_extra_info("sockname"))

    def _datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if addr[:2] != self._server_addr:  # only the server talks to a TURN client (RFC 8656 §4)
            self.dropped["not-from-server"] += 1
            return
        if stun.is_channel_data(data):  # first two bits 01: ChannelData (RFC 8656 §12)
            try:
                cd = ChannelData.decode(data)
            except DecodeError as exc:
                self.dropped[f"channeldata-{exc.reason}"] += 1
                return
            peer = self._peers.get(cd.channel)
            if peer is None:
                self.dropped["unknown-channel"] += 1
                return
            self._deliver(peer, cd.data, "channel-data")
            return
        if not stun.is_stun(data):
            self.dropped["not-turn"] += 1
            return
        try:
            msg = stun.decode(data)
        except DecodeError as exc:
            self.dropped[f"stun-{exc.reason}"] += 1
            return
        if msg.msg_class in (Class.SUCCESS, Class.ERROR):
            future = self._pending.pop(msg.txid.raw, None)
            if future is None or future.done():
                self.dropped["unmatched-response"] += 1
            else:
                future.set_result(msg)
        elif msg.msg_class == Class.INDICATION and msg.method == Method.DATA:  # RFC 8656 §11.4
            peer_attr, data_attr = msg.get(stun.XorPeerAddress), msg.get(stun.Data)
            if peer_attr is None or data_attr is None:
                self.dropped["bad-data-indication"] += 1
            else:
                self._deliver(peer_attr.endpoint, data_attr.data, "data-indication")
        else:
            self.dropped["unexpected-stun"] += 1

    def _deliver(self, peer: Endpoint, payload: bytes, kind: str) -> None:
        try:
            self._queue.put_nowait((peer, payload))
        except asyncio.QueueFull:
            self.dropped["queue-full"] += 1
            return
        self.received += 1
        self.received_by[kind] += 1

    # -- transactions -----------------------------------------------------------------------------

    async def _request(self, method: Method, attrs: list[stun.StunAttribute]) -> Message:
        """One authenticated transaction; learns REALM/NONCE from a 401 or 438 and retries (RFC 8489 §9.2.4)."""
        stale_retried = False
        while True:
            body = list(attrs)
            if self.software is not None:
                body.append(stun.Software(self.software))
            authed = self._key is not None and self.realm is not None and self._nonce is not None
            if authed:
                body += [stun.Username(self.username), stun.Realm(self.realm or ""), stun.Nonce(self._nonce or "")]
            msg = Message(Class.REQUEST, method, TxID(os.urandom(12)), tuple(body))
            answer = await self._transact(
                msg.encode(integrity_key=self._key if authed else None, fingerprint=True), msg.txid
            )
            if answer.msg_class == Class.SUCCESS:
                return answer
            err = answer.get(stun.ErrorCode)
            code = err.code if err is not None else 0
            realm, nonce = answer.get(stun.Realm), answer.get(stun.Nonce)
            # 401 to a request without credentials: learn REALM and NONCE (RFC 8489 §9.2.4); 401 to one with
            # credentials means they are wrong. 438: the nonce went stale, retry once with the new one (§9.2.5).
            if nonce is not None and ((code == 401 and not authed) or (code == 438 and not stale_retried)):
                stale_retried = stale_retried or code == 438
                if realm is not None:
                    self.realm = realm.value
                if self.realm is None:
                    raise TurnError(f"TURN server {self.server} sent {code} without REALM", code)
                self._nonce = nonce.value
                self._key = stun.long_term_key(self.username, self.realm, self.password)
                continue
            what = err.describe() if err is not None else "an error without ERROR-CODE"
            raise TurnError(f"TURN {stun.method_name(method)} to {self.server} failed: {what}", code)

    async def _transact(self, request: bytes, txid: TxID) -> Message:
        """Send ``request`` with RFC 8489 §6.2.1 retransmissions until its answer arrives."""
        transport = await self._open()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[txid.raw] = future
        rto = self.timing.stun_rto
        try:
            for attempt in range(self.timing.stun_rc):
                transport.sendto(request, self._server_addr)
                last = attempt == self.timing.stun_rc - 1
                wait = self.timing.stun_rto * self.timing.stun_rm if last else rto
                try:
                    async with asyncio.timeout(wait):
                        return await asyncio.shield(future)
                except TimeoutError:
                    rto *= 2
        finally:
            self._pending.pop(txid.raw, None)
            future.cancel()
        raise TurnError(f"TURN server {self.server} did not answer (sent {self.timing.stun_rc} times)")

    # -- the public operations ---------------------------------------------------------------------

    async def allocate(self, lifetime: int | None = None) -> Endpoint:
        """Allocate a UDP relayed address (RFC 8656 §7.1-§7.3); returns it (also :attr:`relayed`)."""
        attrs: list[stun.StunAttribute] = [stun.RequestedTransport(stun.PROTO_UDP)]
        if lifetime is not None:
            attrs.append(stun.Lifetime(lifetime))
        answer = await self._request(Method.ALLOCATE, attrs)
        relayed = answer.get(stun.XorRelayedAddress)
        if relayed is None:
            raise TurnError(f"TURN server {self.server} answered Allocate without XOR-RELAYED-ADDRESS")
        self.relayed = relayed.endpoint
        self.mapped = answer.mapped_endpoint
        self.lifetime = _lifetime(answer)
        return self.relayed

    async def refresh(self, lifetime: int | None = None) -> int:
        """Refresh the allocation (RFC 8656 §8); LIFETIME 0 deletes it. Returns the granted lifetime."""
        attrs: list[stun.StunAttribute] = [] if lifetime is None else [stun.Lifetime(lifetime)]
        answer = await self._request(Method.REFRESH, attrs)
        self.lifetime = _lifetime(answer)
        return self.lifetime

    async def create_permission(self, *peers: Endpoint) -> None:
        """Install permissions for the peers' IP addresses (RFC 8656 §9.1)."""
        await self._request(Method.CREATE_PERMISSION, [stun.XorPeerAddress(p) for p in peers])

    async def bind_channel(self, peer: Endpoint, channel: int | None = None) -> int:
        """Bind a channel to ``peer`` (RFC 8656 §12.1); the next free number from 0x4000 by default."""
        if peer in self._channels:
            return self._channels[peer]
        number = channel if channel is not None else CHANNEL_MIN + len(self._peers)
        if not CHANNEL_MIN <= number <= CHANNEL_MAX or number in self._peers:
            raise TurnError(f"channel number {number:#06x} is taken or outside 0x4000-0x4FFF")
        await self._request(Method.CHANNEL_BIND, [stun.ChannelNumber(number), stun.XorPeerAddress(peer)])
        self._channels[peer] = number
        self._peers[number] = peer
        return number

    def channel(self, peer: Endpoint) -> int | None:
        """The channel number bound to ``peer``, or None."""
        return self._channels.get(peer)

    async def send(self, peer: Endpoint, data: bytes) -> None:
        """Relay ``data`` to ``peer``: ChannelData on its channel, else a Send indication (RFC 8656 §11.2)."""
        transport = self._transport
        if transport is None or self.relayed is None:
            raise TurnError("TurnClient.send before allocate()")
        number = self._channels.get(peer)
        if number is not None:
            transport.sendto(ChannelData(number, data).encode(), self._server_addr)
        else:
            attrs = (stun.XorPeerAddress(peer), stun.Data(data))
            transport.sendto(
                Message(Class.INDICATION, Method.SEND, TxID(os.urandom(12)), attrs).encode(), self._server_addr
            )
        self.sent += 1

    async def recv(self) -> tuple[Endpoint, bytes]:
        """The next relayed packet: (the peer it came from, its bytes)."""
        return await self._queue.get()

    async def close(self) -> None:
        """Delete the allocation (best effort, one quick try) and close the socket."""
        if self._transport is None:
            return
        if self.relayed is not None:
            quick = self.timing.replace(stun_rc=1, stun_rm=2)
            saved, self.timing = self.timing, quick
            try:
                await self.refresh(0)
            except TurnError:
                self.dropped["refresh-on-close-failed"] += 1
            finally:
                self.timing = saved
            self.relayed = None
        self._transport.close()
        self._transport = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()


def _lifetime(answer: Message) -> int:
    lifetime = answer.get(stun.Lifetime)
    return lifetime.seconds if lifetime is not None else 0


__all__ = ["CHANNEL_MAX", "CHANNEL_MIN", "TurnClient", "TurnError"]
