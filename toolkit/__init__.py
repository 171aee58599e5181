"""natkit: a toolkit for teaching NAT traversal the way Tailscale does it.

``import toolkit`` is cheap: it imports neither scapy nor ipywidgets (design.md §2).
Layers, bottom up: errors/types/timing, codec and crypto, sansio, services (and their clients),
node, lab, then packets, cli and widgets.
"""

from __future__ import annotations

__version__ = "0.1.0"
