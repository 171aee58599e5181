"""scapy layers, crafter and decrypting sniffer for STUN, disco, Geneve, WireGuard and DERP.

``packets`` is a view over the codecs (design.md §2): the layers use the codecs' constants and
summaries, and the tests check that layers and codecs give the same bytes for every golden vector.
Importing this package imports scapy and installs the content-based UDP binding
(:mod:`toolkit.packets.bind`); ``import toolkit`` alone does neither.

Modules: :mod:`.stun`, :mod:`.disco` (with Geneve), :mod:`.wireguard`, :mod:`.derp` (frames and the
TCP reassembler) are the layers; :mod:`.bind` the binding; :mod:`.crafter` builds valid packets;
:mod:`.keyring` holds the keys that open disco boxes; :mod:`.dissect` turns frames into lesson
lines; :mod:`.sniffer` captures live or reads files; :mod:`.pcapio` reads and writes pcap fast.
"""

from __future__ import annotations

from toolkit.packets import bind as _bind
from toolkit.packets.derp import DERPFrame, DERPReassembler, DERPStream
from toolkit.packets.disco import Disco, DiscoMessage, TSGeneve
from toolkit.packets.stun import STUN, STUNAttribute
from toolkit.packets.wireguard import WireGuard

_bind.install()

__all__ = [
    "STUN",
    "DERPFrame",
    "DERPReassembler",
    "DERPStream",
    "Disco",
    "DiscoMessage",
    "STUNAttribute",
    "TSGeneve",
    "WireGuard",
]
