"""The transport half of the sans-IO WireGuard device: staged packets, encryption, decryption, delivery.

Follows the WireGuard whitepaper §5.4.6 (transport messages, key confirmation), §6.1-§6.2 (message
and time limits, rekeying) and §2 (cryptokey routing of inbound packets), and protocols.md §8.1/§8.5,
behaving like wireguard-go ``device/send.go`` (``SendStagedPackets``, ``keepKeyFreshSending``,
``calculatePaddingSize``) and ``receive.go`` (``RoutineSequentialReceiver``, ``keepKeyFreshReceiving``).

:class:`TransportCore` extends :class:`toolkit.sansio.wghandshake.HandshakeCore`;
:class:`toolkit.sansio.wireguard.WireGuardDevice` extends it with the public API. Sending: packets
wait in the peer's staged queue until its ``current`` keypair may encrypt (younger than
REJECT_AFTER_TIME, counter below REJECT_AFTER_MESSAGES), are padded to a multiple of 16 capped at the
MTU and sealed with the next counter. Receiving: the receiver index picks the keypair, which must be
younger than REJECT_AFTER_TIME; the replay window is checked after the tag verified; the first packet
under a ``next`` keypair confirms it; the source of every authenticated packet becomes the peer's
endpoint (roaming); an inner packet is trimmed to its IP length and delivered only if its source
address routes back to the same peer. ``rx_bytes``/``tx_bytes`` count wire bytes of every
authenticated message, as wireguard-go does for ``wg show``'s "transfer".
"""

from __future__ import annotations

from toolkit.codec import wireguard as wg
from toolkit.crypto import noise
from toolkit.errors import CryptoError
from toolkit.sansio.wgevents import KeypairConfirmed
from toolkit.sansio.wghandshake import HandshakeCore, describe, ip_text
from toolkit.sansio.wgpeer import Keypair, Peer
from toolkit.types import Endpoint


class TransportCore(HandshakeCore):
    """The send and transport-receive paths of the device (see the module docstring)."""

    mtu: int  # padding is capped at the MTU (set by WireGuardDevice)

    def _usable(self, kp: Keypair, now: float) -> bool:
        """A keypair may encrypt: below REJECT_AFTER_MESSAGES and younger than REJECT_AFTER_TIME."""
        return kp.send_counter < self.timing.reject_after_messages and now < kp.created + self.timing.reject_after_time

    def _send_staged(self, peer: Peer, now: float) -> None:
        """Encrypt and send the staged packets with the current keypair, or start a handshake first."""
        if not peer.staged:
            return
        kp = peer.keypairs.current
        if kp is None or not self._usable(kp, now):
            self._send_initiation(peer, now, retry=False)
            return
        peer.timers.authenticated_traversal(now, peer.persistent_keepalive)
        peer.timers.any_authenticated_sent()
        data_sent = False
        while peer.staged and kp.send_counter < self.timing.reject_after_messages:
            packet = peer.staged.popleft()
            counter, kp.send_counter = kp.send_counter, kp.send_counter + 1
            self._send(peer, noise.seal_transport(kp.keys, counter, noise.pad(packet, self.mtu)), now)
            data_sent = data_sent or bool(packet)
        if data_sent:
            peer.timers.data_sent(now)
        if peer.staged:  # the counter ran out: the rest waits for new keys
            self._send_initiation(peer, now, retry=False)
        else:
            self._keep_key_fresh_sending(peer, now)

    def _send_keepalive(self, peer: Peer, now: float) -> None:
        """Send the staged packets, or an empty packet if none (wireguard-go ``SendKeepalive``)."""
        if not peer.staged:
            peer.stage(b"")
        self._send_staged(peer, now)

    def _keep_key_fresh_sending(self, peer: Peer, now: float) -> None:
        """Whitepaper §6.2: rekey past REKEY_AFTER_MESSAGES, or (initiator only) past REKEY_AFTER_TIME."""
        kp = peer.keypairs.current
        if kp is None:
            return
        if kp.send_counter > self.timing.rekey_after_messages or (
            kp.is_initiator and now > kp.created + self.timing.rekey_after_time
        ):
            self._send_initiation(peer, now, retry=False)

    # --- the transport receive path (wireguard-go receive.go) -------------------------------------
    def _receive_transport(self, msg: wg.Transport, data: bytes, src: Endpoint, now: float) -> None:
        """Decrypt, replay-check, confirm keys, roam, then deliver data whose source the peer may use."""
        entry = self._index.get(msg.receiver_index)
        if entry is None or entry.keypair is None:
            self._drop("unknown-index", now, raw=data, endpoint=src)
            return
        peer, kp = entry.peer, entry.keypair
        if now > kp.created + self.timing.reject_after_time:
            self._drop("expired-keypair", now, peer=peer, raw=data, endpoint=src)
            return
        try:
            plain = noise.decrypt(kp.keys.recv_key, msg.counter, msg.encrypted_packet)
        except CryptoError:
            self._drop("bad-tag", now, peer=peer, raw=data, endpoint=src)
            return
        # after authentication, so forged counters cannot move the window (protocols.md §8.5)
        if not kp.replay.check_and_update(msg.counter, self.timing.reject_after_messages):
            self._drop("replay", now, peer=peer, raw=data, endpoint=src)
            return
        peer.rx_bytes += len(data)
        self._set_endpoint(peer, src, now)
        dropped = peer.keypairs.confirm(kp)
        if dropped is not None:  # whitepaper §5.4.6: the initiator used `next`, so it holds the keys
            self._free(dropped)
            peer.timers.handshake_complete()
            peer.last_handshake_wall = self.epoch + now
            self._events.append(KeypairConfirmed(peer.public_key, kp.local_index, now))
            self._trace("transition", now, peer=peer, detail="key confirmed: next -> current", reason="confirmed")
            self._send_staged(peer, now)
        if plain:
            self._deliver(peer, plain, data, src, now)
        else:
            self._trace("received", now, peer=peer, detail=describe(data), raw=data, endpoint=src)
        self._keep_key_fresh_receiving(peer, now)
        peer.timers.authenticated_traversal(now, peer.persistent_keepalive)
        peer.timers.any_authenticated_received()
        if plain:
            peer.timers.data_received(now)

    def _deliver(self, peer: Peer, plain: bytes, data: bytes, src: Endpoint, now: float) -> None:
        """Hand a decrypted packet to the TUN if it is IP and its source is in the peer's AllowedIPs."""
        inner = inner_packet(plain)
        if inner is None:
            self._drop("bad-ip-packet", now, peer=peer, raw=plain, endpoint=src, detail="decrypted packet")
            return
        packet, source = inner
        if self._allowed.lookup(source) != peer.public_key:  # whitepaper §2: cryptokey routing, inbound
            self._drop("allowed-ips", now, peer=peer, raw=packet, endpoint=src, detail=f"source {ip_text(source)}")
            return
        self._received.append(packet)
        self._trace("received", now, peer=peer, detail=describe(data), raw=data, endpoint=src)

    def _keep_key_fresh_receiving(self, peer: Peer, now: float) -> None:
        """Whitepaper §6.2: the initiator rekeys once when its keypair nears REJECT_AFTER_TIME."""
        if peer.timers.sent_last_minute_handshake:
            return
        kp = peer.keypairs.current
        t = self.timing
        if (
            kp is not None
            and kp.is_initiator
            and now > kp.created + t.reject_after_time - t.keepalive_timeout - t.rekey_timeout
        ):
            peer.timers.sent_last_minute_handshake = True
            self._send_initiation(peer, now, retry=False)


def destination(packet: bytes) -> bytes | None:
    """The destination address of an IPv4/IPv6 packet from the TUN, or None (wireguard-go RoutineReadFromTUN)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[24:40]
    return None


def inner_packet(plain: bytes) -> tuple[bytes, bytes] | None:
    """(packet trimmed to its IP length, source address) of a decrypted packet, or None (receive.go)."""
    version = plain[0] >> 4
    if version == 4 and len(plain) >= 20:
        length = int.from_bytes(plain[2:4], "big")  # total length
        if 20 <= length <= len(plain):
            return plain[:length], plain[12:16]
    elif version == 6 and len(plain) >= 40:
        length = 40 + int.from_bytes(plain[4:6], "big")  # payload length
        if length <= len(plain):
            return plain[:length], plain[8:24]
    return None


__all__ = ["TransportCore", "destination", "inner_packet"]
