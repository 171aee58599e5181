"""asyncio services and their clients: STUN, DERP relay, coordination server, netcheck.

Each service is a thin asyncio driver around a sans-IO core in :mod:`toolkit.sansio`
(design.md §2, §4): it owns sockets and one timer, feeds the core and sends what the core wants
sent. Every service can run as its own process (``natkit stun-server``, ``natkit derp-server``,
``natkit control-server``, through :mod:`toolkit.services.runner`) or in-process, inside an
event loop a lab or a test already runs (``await service.start()`` / ``await service.stop()``).

The clients of these services (STUN client and NAT behaviour discovery, DERP client, control
client, netcheck) live here too: the node (:mod:`toolkit.node`) sits above this package and uses
them. Layering is checked by import-linter (pyproject.toml).
"""
