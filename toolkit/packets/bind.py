"""Content-based binding: STUN, disco, Geneve and WireGuard found under UDP on any port.

magicsock receives all of them on one UDP socket and tells them apart by content
(protocols.md §4.11); so does this binding, with the same rules: :func:`datagram_class` asks
:func:`toolkit.packets.dissect.natkit_kind`, which is the codec's ``demux.classify`` (plus: bytes
that do not start like WireGuard stay Raw instead of showing as broken WireGuard).

How it hooks into scapy without patching it: :func:`install` binds a dispatcher layer under UDP
with no port condition (``bind_layers(UDP, NatkitDatagram)``). scapy tries port bindings first
(DNS on 53, ...), in the order they were made, and the dispatcher's ``dispatch_hook`` returns the
real class for the bytes. :func:`install` runs when ``toolkit.packets`` is imported (never on
``import toolkit``); :func:`uninstall` removes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scapy.config import conf
from scapy.layers.inet import UDP
from scapy.packet import Packet, bind_layers, split_layers

from toolkit.codec.demux import Kind
from toolkit.packets import pcapio
from toolkit.packets.derp import DERPFrame
from toolkit.packets.disco import Disco, TSGeneve
from toolkit.packets.dissect import natkit_kind
from toolkit.packets.stun import STUN
from toolkit.packets.wireguard import WireGuard

if TYPE_CHECKING:
    from toolkit.packets.dissect import Event

_CLASSES: dict[Kind, type[Packet]] = {
    Kind.STUN: STUN,
    Kind.DISCO: Disco,
    Kind.GENEVE_DISCO: TSGeneve,
    Kind.GENEVE_WIREGUARD: TSGeneve,
    Kind.WIREGUARD: WireGuard,
}


def datagram_class(data: bytes) -> type[Packet]:
    """The layer class for a UDP payload or DERP packet body, by content (protocols.md §4.11)."""
    data = bytes(data)
    cls: type[Packet] = _CLASSES.get(natkit_kind(data), conf.raw_layer)
    if "dispatch_hook" in cls.__dict__:  # WireGuard picks its message type (scapy dispatches only once)
        cls = cls.dispatch_hook(data)
    return cls


class NatkitDatagram(Packet):
    """A dispatcher, never an instance: ``NatkitDatagram(data)`` is ``datagram_class(data)(data)``."""

    name = "natkit datagram"

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        return datagram_class(_pkt or b"")


def installed() -> bool:
    return any(upper is NatkitDatagram for _, upper in UDP.payload_guess)


def install() -> None:
    """Bind natkit's layers under UDP on every port (idempotent)."""
    if not installed():
        bind_layers(UDP, NatkitDatagram)


def uninstall() -> None:
    """Undo :func:`install`: UDP payloads on other ports are Raw again."""
    if installed():
        split_layers(UDP, NatkitDatagram)


def link_class(linktype: int) -> type[Packet]:
    """The scapy class of a capture's link layer (LINKTYPE_* numbers, see pcapio)."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback

    return {
        pcapio.LINKTYPE_ETHERNET: Ether,
        pcapio.LINKTYPE_LINUX_SLL: CookedLinux,
        pcapio.LINKTYPE_LINUX_SLL2: CookedLinuxV2,
        pcapio.LINKTYPE_NULL: Loopback,
    }.get(linktype, IP)


def dissect_record(record: pcapio.Record) -> Packet:
    """A captured frame dissected by scapy, natkit's layers included."""
    install()
    data = record.data
    if record.linktype in (pcapio.LINKTYPE_RAW, pcapio.LINKTYPE_IPV4, pcapio.LINKTYPE_IPV6) and data[:1]:
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        return (IPv6 if data[0] >> 4 == 6 else IP)(data)
    return link_class(record.linktype)(data)


def dissect_event(event: Event) -> Packet:
    """The scapy view of a sniffer event: the frame, or the DERP frame; an opened box attached."""
    from scapy.packet import Raw

    if event.transport == "tcp":
        head = event.payload[:4] in (b"GET ", b"HTTP")  # the HTTP upgrade, before the frames
        pkt: Packet = Raw(event.payload) if head or not event.payload else DERPFrame(event.payload)
    elif event.record is not None:
        pkt = dissect_record(event.record)
    else:
        pkt = datagram_class(event.payload)(event.payload)
    if event.opened is not None:
        wrapper = pkt.getlayer(Disco)
        if wrapper is not None:
            wrapper.attach_plaintext(event.opened.plaintext)
    if event.inner:  # decrypted WireGuard transport data: the inner IP packet under its message
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        from toolkit.packets.wireguard import WireGuardTransport

        transport = pkt.getlayer(WireGuardTransport)
        if transport is not None:
            transport.remove_payload()
            transport.add_payload((IPv6 if event.inner[0] >> 4 == 6 else IP)(event.inner))
    return pkt


__all__ = [
    "NatkitDatagram",
    "datagram_class",
    "dissect_event",
    "dissect_record",
    "install",
    "installed",
    "link_class",
    "uninstall",
]
