"""asyncio drivers for the node and the WireGuard device.

Drivers are thin (design.md §2): they own sockets, TUN file descriptors and one timer, feed the
sans-IO cores in :mod:`toolkit.sansio`, drain what the cores want sent, and make no protocol
decisions. Modules:

* :mod:`toolkit.node.wgconfig`: the wg-quick config format (parser and writer).
* :mod:`toolkit.node.tun`: open and configure a Linux TUN device, optionally in a network namespace.
* :mod:`toolkit.node.uapi`: WireGuard's cross-platform userspace API (the ``wg`` control socket).
* :mod:`toolkit.node.wgdevice`: the asyncio driver of a WireGuard device on a TUN.
"""
