"""The ``sim`` lab backend: an in-process, deterministic virtual internet with exact RFC 4787 NATs.

Layers, bottom up (each module's docstring has the details):

* :mod:`.clock`: the virtual clock, the event scheduler and the seeded random streams;
* :mod:`.packet`: real IPv4/IPv6 + UDP/TCP bytes with checksums (build and parse);
* :mod:`.link`: latency, jitter, loss and bandwidth per interface;
* :mod:`.capture`: a capture point on every interface, pcap / pcapng output;
* :mod:`.nat`: the NAT engine (mapping, allocation, filtering, timeouts, hairpinning, WAN input);
* :mod:`.net`: segments, interfaces, machines with routing tables and sockets (after Tailscale's
  natlab, protocols.md §6.1);
* :mod:`.sockets`: virtual UDP sockets and the drivers of the sans-IO cores (STUN server, RFC 5780
  discovery);
* :mod:`.tcp`, :mod:`.streams`: TCP, and the DERP relay and client over it;
* :mod:`.control` (+ ``control_client``, ``control_stream``, ``control_call``): the coordination server
  and the node's client, HTTP/1.1 over that TCP;
* :mod:`.world`: a :class:`~toolkit.lab.topology.Topology` built as a simulated network (synchronous);
* :mod:`.lab`: :class:`SimLab`, the :class:`~toolkit.lab.backend.Lab` of this backend.

Same seed, same packets, byte for byte.
"""

from toolkit.lab.sim.lab import SimLab
from toolkit.lab.sim.world import SimWorld

__all__ = ["SimLab", "SimWorld"]
