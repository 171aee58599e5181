"""Namespaces, veth pairs, bridges, addresses, routes, sysctls and rulesets of a ``netns`` lab, in batches.

Layout (design.md §1, §5): one network namespace per host and per router, named
``nk-PREFIX-ELEMENT``, and one "switch" namespace per segment, ``nk-PREFIX-SEGMENT`` (segment and
element names are unique within a topology), holding a bridge named after the segment. Every host
and router interface (``eth0``, ``wan``, ``lan``) is one end of a veth pair whose other end is a
bridge port in its segment's switch namespace, named after the element. Nothing is ever created in
the root namespace: a Docker engine there sets FORWARD to DROP and loads br_netfilter (design.md §5),
and a lab's names then cannot collide with the host's or another lab's. ``apply`` returns when every
link carries packets (:func:`_wait_ready`). The bridges sit in namespaces
without rules, so a loaded br_netfilter (which hands bridged frames to the namespace's own IP hooks)
finds nothing to apply; the switch namespaces turn it off anyway where the sysctl exists.

Speed: the root namespace gets one ``ip -batch -`` (every ``netns add`` and every veth pair, each end
created directly in its namespace); then each namespace gets, in parallel, sysctls written through
``/proc/sys`` by a thread that joined it with ``setns(2)``, one ``ip -batch -`` and, for a NAT
router, one ``nft -f -``, both forked from that thread (a child inherits the thread's namespace).
IPv6 is switched off where an element has no v6 address, so captures show no link-local chatter.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import NatkitError, UsageError
from toolkit.lab.netns import nftables
from toolkit.lab.topology import Host, Router, Topology
from toolkit.node.tun import NETNS_DIR, run_in_netns

NS_PREFIX = "nk-"
IFNAMSIZ = 15  # longest interface name Linux accepts
SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
IFF_RUNNING = 0x40  # <linux/if.h>: operstate up (carrier seen by link watch)
READY_TIMEOUT = 10.0
FIRST_IFINDEX = 100
_NO_V6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
_BRIDGE_NF = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")


class PlumbingError(NatkitError):
    """An ``ip``/``nft`` command or a sysctl failed while building or removing a lab."""


def ns_name(prefix: str, element: str) -> str:
    """The namespace of a host, router or segment switch: ``nk-PREFIX-NAME``."""
    return f"{NS_PREFIX}{prefix}-{element}"


def port_name(element: str) -> str:
    """The bridge port of ``element`` in its segment's switch namespace (``lo`` is taken)."""
    name = element if element != "lo" else "p-lo"
    assert len(name) <= IFNAMSIZ, name
    return name


@dataclass
class Layout:
    """Everything a lab creates, as command batches (see the module docstring)."""

    prefix: str
    namespaces: dict[str, str] = field(default_factory=dict)  # element or segment -> namespace
    root: list[str] = field(default_factory=list)  # `ip -batch` lines run in the root namespace
    inside: dict[str, list[str]] = field(default_factory=dict)  # namespace -> `ip -batch` lines
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # before the links come up
    nft: dict[str, str] = field(default_factory=dict)  # namespace -> ruleset
    late_sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # after the ruleset (conntrack)
    optional_sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # skipped where absent
    devices: dict[str, list[str]] = field(default_factory=dict)  # namespace -> interfaces that must be running
    ports: dict[str, list[str]] = field(default_factory=dict)  # switch namespace -> bridge ports


def layout(topo: Topology, prefix: str) -> Layout:
    """The :class:`Layout` of ``topo`` under namespace prefix ``nk-PREFIX-``."""
    for router in topo.routers:
        if router.nat is not None:
            nftables.check_expressible(router.nat)  # before anything exists
    out = Layout(prefix)
    six = topo.uses_ipv6
    elements: tuple[Host | Router, ...] = (*topo.hosts, *topo.routers)
    pairs = 0
    for seg in topo.segments:
        ns = out.namespaces[seg.name] = ns_name(prefix, seg.name)
        out.root.append(f"netns add {ns}")
        out.sysctls[ns] = dict(_NO_V6)
        out.optional_sysctls[ns] = {name: "0" for name in _BRIDGE_NF}
        out.inside[ns] = [f"link add name {seg.name} type bridge", f"link set dev {seg.name} up"]
        out.ports[ns] = []
    for element in elements:
        ns = out.namespaces[element.name] = ns_name(prefix, element.name)
        out.root.append(f"netns add {ns}")
        out.inside[ns] = ["link set dev lo up"]
    for element in elements:
        ns = out.namespaces[element.name]
        for iface in topo.interfaces(element.name):
            seg_ns, port = out.namespaces[iface.segment], port_name(element.name)
            # explicit, distinct interface indexes: a veth whose peer has the same ifindex (both ends get 2
            # in fresh namespaces) is no "urgent" link-watch event: its carrier comes up after up to 1 s
            index = FIRST_IFINDEX + 2 * pairs
            pairs += 1
            out.root.append(
                f"link add name {iface.name} index {index} netns {ns}"
                f" type veth peer name {port} index {index + 1} netns {seg_ns}"
            )
            out.inside[seg_ns] += [f"link set dev {port} master {iface.segment}", f"link set dev {port} up"]
            out.ports[seg_ns].append(port)
            out.devices.setdefault(ns, []).append(iface.name)
            lines = out.inside[ns]
            lines += [f"addr add {a}/{iface.prefixlen} dev {iface.name}" for a in (iface.v4, *iface.extra_v4)]
            if iface.v6 is not None:
                lines.append(f"addr add {iface.v6}/{iface.v6_prefixlen} dev {iface.name} nodad")
            lines.append(f"link set dev {iface.name} up")
        out.inside[ns] += [f"route add {route}" for route in topo.routes(element.name)]
        out.sysctls[ns] = _element_sysctls(topo, element, six)
        if "net.ipv6.conf.all.disable_ipv6" not in out.sysctls[ns]:  # no duplicate address detection:
            for dev in ("all", "default", *(i.name for i in topo.interfaces(element.name))):  # usable at once
                out.sysctls[ns][f"net.ipv6.conf.{dev}.accept_dad"] = "0"
        if isinstance(element, Router) and element.nat is not None:
            out.nft[ns] = nftables.ruleset(nftables.rules_for(topo, element))
            out.late_sysctls[ns] = nftables.conntrack_sysctls(element.nat)
    return out


def _element_sysctls(topo: Topology, element: Host | Router, six: bool) -> dict[str, str]:
    values: dict[str, str] = {}
    has_v6 = element.v6 is not None if isinstance(element, Host) else six
    if not has_v6:
        values.update(_NO_V6)
    if isinstance(element, Router):
        values["net.ipv4.ip_forward"] = "1"
        if has_v6:
            values["net.ipv6.conf.all.forwarding"] = "1"
    return values


# --- running it ------------------------------------------------------------------------------------


def _run(argv: list[str], stdin: str, what: str) -> None:
    try:
        done = subprocess.run(argv, input=stdin.encode(), capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise UsageError(f"`{argv[0]}` not found: install {'nftables' if argv[0] == 'nft' else 'iproute2'}") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise PlumbingError(f"{what}: `{' '.join(argv)}` failed: {err or done.returncode}")


def ip_batch(lines: Iterable[str], what: str = "ip", force: bool = False) -> None:
    """Run ``ip -batch -`` (in the calling thread's namespace) with ``lines``."""
    text = "\n".join(lines)
    if text:
        _run(["ip", *(["-force"] if force else []), "-batch", "-"], text + "\n", what)


def write_sysctls(values: dict[str, str], *, optional: bool = False) -> None:
    """Write sysctls through ``/proc/sys`` in the calling thread's network namespace."""
    for name, value in values.items():
        path = Path("/proc/sys", *name.split("."))
        try:
            path.write_text(value)
        except FileNotFoundError:
            if not optional:
                raise PlumbingError(f"sysctl {name} does not exist in this kernel or namespace") from None
        except OSError as exc:
            raise PlumbingError(f"sysctl {name}={value}: {exc.strerror}") from None


def _setup_namespace(out: Layout, ns: str) -> None:
    def inside() -> None:
        write_sysctls(out.sysctls.get(ns, {}))
        write_sysctls(out.optional_sysctls.get(ns, {}), optional=True)
        ip_batch(out.inside.get(ns, ()), f"namespace {ns}")
        if ns in out.nft:
            _run(["nft", "-f", "-"], out.nft[ns], f"nftables in {ns}")
        write_sysctls(out.late_sysctls.get(ns, {}))

    run_in_netns(ns, inside)


def check_free(out: Layout) -> None:
    """A :class:`UsageError` if a namespace of ``out`` exists already (another lab, or leftovers)."""
    existing = [ns for ns in out.namespaces.values() if (NETNS_DIR / ns).exists()]
    if existing:
        raise UsageError(
            f"network namespace {existing[0]} already exists: another lab uses the name {out.prefix!r}"
            f" (run `natkit lab down {out.prefix}`) or choose another name"
        )


def apply(out: Layout) -> None:
    """Create everything in ``out``: the root batch first, then every namespace in parallel."""
    check_free(out)
    ip_batch(out.root, "creating namespaces and veth pairs")
    namespaces = list(out.namespaces.values())
    run_parallel(lambda ns: _setup_namespace(out, ns), namespaces)
    run_parallel(lambda ns: _wait_ready(out, ns, READY_TIMEOUT), namespaces)


def _running(names: list[str]) -> list[str]:
    """The interfaces among ``names`` that are not yet IFF_RUNNING (operstate up) in this thread's namespace."""
    waiting = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # created here: bound to this namespace
        for name in names:
            ifreq = struct.pack("16sH14x", name.encode(), 0)
            flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
            if not flags & IFF_RUNNING:
                waiting.append(name)
    return waiting


def _not_forwarding(ports: list[str]) -> list[str]:
    """The bridge ports among ``ports`` that do not forward yet (``bridge -j link show``)."""
    done = subprocess.run(["bridge", "-j", "link", "show"], capture_output=True, text=True, timeout=10, check=False)
    try:
        states = {p["ifname"]: p.get("state") for p in json.loads(done.stdout or "[]")}
    except (ValueError, KeyError, TypeError):
        return list(ports)
    return [p for p in ports if states.get(p) != "forwarding"]


def _wait_ready(out: Layout, ns: str, timeout: float) -> None:
    """Block until the links of ``ns`` carry packets.

    A veth's carrier, the operstate that lets its queue send (IFF_RUNNING) and a bridge port's
    forwarding state all follow the kernel's link-watch work, which runs after ``ip`` returns and
    can lag by a second under load (rtnl contention, e.g. other namespaces being deleted). Packets
    sent before that are dropped silently: a first STUN request would be lost.
    """

    def poll() -> None:
        deadline = time.monotonic() + timeout
        devices, ports = list(out.devices.get(ns, ())), list(out.ports.get(ns, ()))
        while True:
            devices = _running(devices) if devices else []
            ports = _not_forwarding(ports) if ports and not _running(ports) else ports
            if not devices and not ports:
                return
            if time.monotonic() > deadline:
                raise PlumbingError(f"namespace {ns}: {', '.join(devices + ports)} not up after {timeout} s")
            time.sleep(0.005)

    run_in_netns(ns, poll)


def run_parallel(fn: Callable[[str], None], items: list[str], workers: int = 8) -> None:
    """``fn(item)`` for every item on a small thread pool; the first failure is raised after all ran."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = [pool.submit(fn, item) for item in items]
    for future in futures:
        future.result()


def existing_namespaces(prefix: str | None = None) -> list[str]:
    """Named network namespaces (``ip netns`` bind mounts), optionally only ``nk-PREFIX-*`` ones."""
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []
    if prefix is None:
        return names
    start = ns_name(prefix, "")
    return [n for n in names if n.startswith(start)]


def namespace_pids(namespaces: Iterable[str]) -> dict[str, list[int]]:
    """The processes living in each named namespace (by the namespace file's inode, as ``ip netns pids``)."""
    inodes: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = os.stat(NETNS_DIR / ns)
        except FileNotFoundError:
            continue
        inodes[(st.st_dev, st.st_ino)] = ns
    found: dict[str, list[int]] = {ns: [] for ns in inodes.values()}
    if not inodes:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        owner = inodes.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return found


def delete_namespaces(namespaces: Iterable[str]) -> None:
    """``ip netns delete`` every one that exists (one batch; veths and bridges inside go with them)."""
    names = [ns for ns in namespaces if (NETNS_DIR / ns).exists()]
    if names:
        ip_batch((f"netns delete {ns}" for ns in names), "deleting namespaces", force=True)


__all__ = [
    "NS_PREFIX",
    "Layout",
    "PlumbingError",
    "apply",
    "check_free",
    "delete_namespaces",
    "existing_namespaces",
    "ip_batch",
    "layout",
    "namespace_pids",
    "ns_name",
    "port_name",
    "run_parallel",
    "write_sysctls",
]
